"""report.json and a self-contained report.html for an evaluation, both written atomically.

report.json: every number (scores, leak tests, interference), the JobSpec, model hashes, library
versions (torch, diffusers, transformers, concept_eraser), seeds, sample counts and the description
of every metric that produced a number. report.html: the before/after grids (same seeds) as base64
PNGs, the per-cell retention heat (LPIPS, or the SSIM distance when LPIPS is unavailable — named in
the caption), the score table and the leak table. No external resources.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from concept_eraser.spec.events import Grid
from concept_eraser.spec.files import atomic_write_text


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from concept_eraser import __version__

    out: dict[str, str | None] = {"concept_eraser": __version__}
    for pkg in ("torch", "diffusers", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def clean_json(v: Any) -> Any:
    """NaN/inf -> None, numpy -> Python, recursively (valid JSON)."""
    if isinstance(v, dict):
        return {str(k): clean_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean_json(x) for x in v]
    if isinstance(v, np.ndarray):
        return clean_json(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _png_b64(img: np.ndarray, scale: int = 1) -> str:
    from PIL import Image

    im = Image.fromarray(img)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heat(per_cell: np.ndarray, like: Grid) -> np.ndarray:
    """(rows, cols) values -> an image tiled exactly like `like.tiled()`: white (0) to red (max); NaN grey."""
    v = np.asarray(per_cell, dtype=float)
    hi = np.nanmax(v) if np.isfinite(v).any() else 1.0
    norm = np.clip(v / max(hi, 1e-8), 0, 1)
    rgb = np.empty((*v.shape, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    rgb[..., 1] = np.nan_to_num(255 * (1 - norm)).astype(np.uint8)
    rgb[..., 2] = rgb[..., 1]
    rgb[~np.isfinite(v)] = (200, 200, 200)
    h, w = like.images.shape[2:4]
    cells = np.broadcast_to(rgb[:, :, None, None, :], (*v.shape, h, w, 3))
    return Grid(np.ascontiguousarray(cells), like.row_labels, like.seeds).tiled()


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return html.escape(str(v))


def render_html(report: dict, before: Grid | None, after: Grid | None, heat: np.ndarray | None,
                heat_name: str | None) -> str:
    title = f"concept_eraser evaluation — {html.escape(str(report.get('title', '')))}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}",
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}",
             ".leak{background:#fdd}.ok{background:#dfd}img{image-rendering:pixelated;border:1px solid #999}",
             "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}</style></head><body>",
             f"<h1>{title}</h1>"]
    meta = report.get("models", {})
    parts.append("<p>" + "<br>".join(f"<b>{html.escape(k)}</b>: {_fmt(v)}" for k, v in meta.items()) + "</p>")
    if before is not None and after is not None:
        scale = max(1, 64 // before.images.shape[2])
        rows = ", ".join(html.escape(r) for r in before.row_labels)
        parts.append(f"<h2>Before / after (same seeds {list(before.seeds)})</h2><p>Rows: {rows}</p>")
        parts.append(f"<figure><img alt='before' src='{_png_b64(before.tiled(), scale)}'><figcaption>original"
                     "</figcaption></figure>")
        parts.append(f"<figure><img alt='after' src='{_png_b64(after.tiled(), scale)}'><figcaption>edited"
                     "</figcaption></figure>")
        if heat is not None and heat_name:
            parts.append(f"<figure><img alt='heat' src='{_png_b64(_heat(heat, before), scale)}'><figcaption>per-cell "
                         f"{html.escape(heat_name)} (white 0 → red max {np.nanmax(heat) if np.isfinite(heat).any() else 0:.3g};"
                         " grey: not a retain row)</figcaption></figure>")
    scores = report.get("scores", {})
    parts.append("<h2>Scores</h2><table><tr><th>key</th><th>value</th></tr>")
    parts += [f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in scores.items()]
    parts.append("</table>")
    leaks = report.get("leaks")
    if leaks:
        parts.append("<h2>Leaks</h2><table><tr><th>test</th><th>probe</th><th>recognised (original)</th>"
                     "<th>recognised (edited)</th><th>leaked</th></tr>")
        for r in leaks:
            cls = "leak" if r.get("leaked") else "ok"
            parts.append(f"<tr class='{cls}'><td>{_fmt(r.get('test'))}</td><td>{_fmt(r.get('probe'))}</td>"
                         f"<td>{_fmt(r.get('recognised_before'))}</td><td>{_fmt(r.get('recognised'))}</td>"
                         f"<td>{_fmt(r.get('leaked'))}</td></tr>")
        parts.append("</table>")
    inter = report.get("interference")
    if inter:
        parts.append("<h2>Interference (recognition after / before)</h2><table><tr><th>edit \\ concept</th>"
                     + "".join(f"<th>{_fmt(c)}</th>" for c in inter["cols"]) + "</tr>")
        for name, row in zip(inter["rows"], inter["ratio"], strict=True):
            parts.append(f"<tr><td>{_fmt(name)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    descs = report.get("metric_descriptions", {})
    if descs:
        parts.append("<h2>What each number means</h2><dl>")
        parts += [f"<dt><b>{html.escape(k)}</b></dt><dd>{html.escape(str(v))}</dd>" for k, v in descs.items()]
        parts.append("</dl>")
    parts.append(f"<h2>Settings</h2><pre>{html.escape(json.dumps(report.get('job'), indent=2))}</pre>")
    parts.append(f"<p>Versions: {html.escape(json.dumps(report.get('versions')))}</p></body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, report: dict, before: Grid | None = None, after: Grid | None = None,
                 heat: np.ndarray | None = None, heat_name: str | None = None) -> dict[str, str]:
    """Write report.json and report.html into out_dir (atomically); returns their paths."""
    out_dir = Path(out_dir)
    data = clean_json(report)
    j = atomic_write_text(out_dir / "report.json", json.dumps(data, indent=2) + "\n")
    h = atomic_write_text(out_dir / "report.html", render_html(data, before, after, heat, heat_name))
    return {"report_json": str(j), "report_html": str(h)}
