"""Export a finished run (its `model/` folder) so it loads everywhere, and verify every export.

Formats (`FORMATS`):
  diffusers    the whole edited pipeline as a diffusers folder (safetensors); SD, SDXL and DDPM models
  single-file  one .safetensors with LDM/SGM key names (A1111/Forge, ComfyUI, from_single_file); SD 1.x/2.x/SDXL
  delta        only the tensors that differ from the base model (named in job.json, checked by sha256)
  lora         kohya LoRA factors of the weight difference by SVD at --rank (engine/weight_diff.py)

Every safetensors header carries the JobSpec, base sha256, method, a scores summary, the version and
the format (export_files.export_metadata). Verification reloads what was written into a fresh
pipeline and renders a same-seed grid: full exports (diffusers, single-file, delta applied to the
base) must match the run's model within 1/255 per pixel; a LoRA applied at scale 1 to the base is
compared with the full edit by LPIPS (or, without AlexNet weights, SSIM distance + max pixel diff,
named as such). The report is the job's value and is stored as `<out>.verify.json`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from concept_eraser.spec.events import Event, Grid, JobResult, Log, StageStarted
from concept_eraser.spec.jobspec import JobSpec, ModelSource, SampleRow, SamplingSpec, parse_job
from concept_eraser.spec.registry import ExportFormat
from concept_eraser.spec.runloop import JobContext, UserError, quiet
from concept_eraser.spec.summary import ModelSummary

from . import export_files as ef

FORMATS = ("diffusers", "single-file", "delta", "lora")
DEFAULT_RANK = 16
TOLERANCE = 1  # uint8 levels: 1/255 per pixel


def export_formats(summary: ModelSummary) -> list[ExportFormat]:
    """What a model of this kind can be exported as (DDPM models: only a diffusers folder)."""
    out = [ExportFormat("diffusers", "Diffusers folder", "The whole edited pipeline as a diffusers folder "
                                                         "(safetensors); loads with diffusers' from_pretrained.")]
    if summary.kind in ("sd", "sdxl"):
        out += [
            ExportFormat("single-file", "Single file (A1111/Forge/ComfyUI)",
                         "One .safetensors checkpoint with the original LDM key names."),
            ExportFormat("delta", "Delta file", "Only the changed tensors; applies to the exact base model "
                                                "(checked by sha256)."),
            ExportFormat("lora", "LoRA (kohya)", "Low-rank factors of the change (SVD): switch the erasure on/off "
                                                 "or scale it in any LoRA-aware UI.", {"rank": DEFAULT_RANK}),
        ]
    return out


def read_run(run_dir: Path) -> tuple[JobSpec, dict, Path]:
    run_dir = Path(run_dir).expanduser()
    model_dir = run_dir / "model"
    if not (run_dir / "job.json").is_file() or not (model_dir / "model_index.json").is_file():
        raise UserError(f"{run_dir} is not a finished run folder (needs job.json and model/); run concept-eraser "
                        f"erase first")
    spec = parse_job(json.loads((run_dir / "job.json").read_text(encoding="utf-8")))
    scores_file = run_dir / "scores.json"
    scores = json.loads(scores_file.read_text(encoding="utf-8")).get("scores", {}) if scores_file.is_file() else {}
    return spec, scores, model_dir


def verify_sampling(bundle, spec: JobSpec, options: dict[str, Any]) -> SamplingSpec:
    """A small fixed same-seed grid: the job's concepts and up to two retain rows x 4 seeds."""
    s = bundle.summary
    rows = [SampleRow(label=c.label) if c.label is not None else SampleRow(prompt=c.text) for c in spec.concepts]
    rows += [r for r in spec.retain if r not in rows][:2]
    rows = [r for r in rows if (r.kind == "prompt") == (s.conditioning == "text")] or [
        SampleRow(prompt="a photo") if s.conditioning == "text" else SampleRow()]
    steps = int(options.get("verify_steps") or min(s.default_steps, 10))
    seeds = list(options.get("seeds") or [0, 1, 2, 3])
    return SamplingSpec(rows=rows, seeds=seeds, steps=steps, batch_size=64)


def render(bundle, sampling: SamplingSpec, ctx: JobContext) -> Generator[Event, None, Grid]:
    from .sampling import sample_grid

    return (yield from quiet(sample_grid(bundle, sampling, ctx)))


def pixel_diff(a: Grid, b: Grid) -> int:
    return int(np.abs(a.images.astype(np.int16) - b.images.astype(np.int16)).max())


def _compare(reference: Grid, grid: Grid, sampling: SamplingSpec, against: str) -> dict[str, Any]:
    d = pixel_diff(reference, grid)
    return {"against": against, "max_pixel_diff": d / 255, "max_pixel_diff_uint8": d, "tolerance_uint8": TOLERANCE,
            "pass": d <= TOLERANCE, "cells": int(reference.images.shape[0] * reference.images.shape[1]),
            "seeds": list(sampling.seeds), "steps": sampling.steps}


def _load(path, config_dir=None, sha256=None):
    from .loading import load_model

    return load_model(ModelSource(path=str(path), config_dir=config_dir, sha256=sha256))


def single_file_config_dir(bundle, file: Path, model_dir: Path) -> str | None:
    """None when the shipped configs describe this model (real SD releases), else the run's model folder."""
    from concept_eraser.resources import configs_dir

    from .single_file import detect_architecture, read_safetensors_header, shipped_config_name

    keys, meta = read_safetensors_header(file)
    name = shipped_config_name(detect_architecture(keys), file, meta)
    cfg = configs_dir() / name / "unet" / "config.json"
    if cfg.is_file():
        shipped = json.loads(cfg.read_text())
        mine = bundle.unet.config
        if all(json.dumps(shipped.get(k)) == json.dumps(_plain(mine.get(k)))
               for k in ("block_out_channels", "cross_attention_dim", "sample_size", "layers_per_block")):
            return None
    return str(model_dir)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def export_job(run_dir: str | Path, fmt: str, out: str | Path, ctx: JobContext,
               options: dict[str, Any] | None = None) -> Generator[Event, None, JobResult]:
    """Write the run's edited model as `fmt` to `out`, verify it, return the verification report.

    options: force (replace an existing `out`), rank (lora, default 16), seeds / verify_steps (the
    verification grid), config_dir (single-file verification configs; default: shipped or the run's model).
    """
    options = dict(options or {})
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    run_dir = Path(run_dir).expanduser()
    spec, scores, model_dir = read_run(run_dir)
    protected = [model_dir]
    base_path = None
    if spec.model.path:
        from .loading import resolve_path

        try:
            base_path = resolve_path(spec.model)
            protected.append(base_path)
        except UserError:
            base_path = None
    out = ef.check_target(Path(out), bool(options.get("force")), protected)
    if fmt == "single-file" and out.suffix.lower() != ".safetensors":
        raise UserError(f"{out.name}: single-file exports are .safetensors; choose a name ending in .safetensors")
    if fmt in ("delta", "lora") and out.suffix.lower() != ".safetensors":
        raise UserError(f"{out.name}: {fmt} files are .safetensors; choose a name ending in .safetensors")
    if fmt in ("diffusers", "single-file"):
        ef.check_space(out, ef.folder_bytes(model_dir))

    yield StageStarted("load")
    edited = _load(model_dir)
    kind = edited.summary.kind
    if kind not in ("sd", "sdxl") and fmt != "diffusers":
        raise UserError(f"{kind} models export only as a diffusers folder (--format diffusers)")
    if edited.meta.get("one_step") and fmt != "diffusers":  # the other formats would lose "sample in one step"
        raise UserError("a one-step (SFD) model exports only as a diffusers folder (--format diffusers): "
                        "single files, deltas and LoRAs would be sampled as a multi-step model")
    base_sha = spec.model.sha256 or ""
    meta = ef.export_metadata(fmt, spec.to_json(), base_sha, spec.method, scores)
    sampling = verify_sampling(edited, spec, options)
    yield StageStarted("sample")
    reference = yield from render(edited, sampling, ctx)
    report: dict[str, Any] = {"format": fmt, "out": str(out), "run": str(run_dir), "base_sha256": base_sha,
                              "method": spec.method}
    with ef.staging(out) as written:
        ctx.check_cancelled()
        yield StageStarted("export")
        if fmt == "diffusers":
            shutil.copytree(model_dir, written)
            ef.add_metadata_to_folder(written, meta)
            yield StageStarted("verify")
            grid = yield from render(_load(written), sampling, ctx)
            report["verify"] = _compare(reference, grid, sampling, "run model")
        elif fmt == "single-file":
            from .ldm_convert import save_single_file

            save_single_file(edited, written, metadata=meta)
            yield StageStarted("verify")
            config_dir = options.get("config_dir") or single_file_config_dir(edited, written, model_dir)
            grid = yield from render(_load(written, config_dir), sampling, ctx)
            report["verify"] = _compare(reference, grid, sampling, "run model")
            report["verify"]["configs"] = config_dir or "shipped"
        else:
            yield from _write_diff(fmt, spec, edited, written, out, meta, sampling, reference, ctx, options, report)
        ctx.check_cancelled()
        ef.move_into_place(written, out)
    report["bytes"] = ef.folder_bytes(out) if out.is_dir() else out.stat().st_size
    report["verify_file"] = str(ef.write_verify(out, report))
    v = report["verify"]
    if not v.get("pass", True):
        yield Log("warning", f"verification: {fmt} export differs from the run's model by up to "
                             f"{v['max_pixel_diff_uint8']}/255 per pixel")
    yield Log("info", f"wrote {out}")
    return JobResult("finished", value=report, outputs={"export": str(out), "verify": report["verify_file"]})


def _write_diff(fmt, spec, edited, written, out, meta, sampling, reference, ctx, options, report):
    """delta / lora: compare with the base model (loaded by job.json's path, checked by sha256)."""
    from safetensors.torch import save_file

    from .weight_diff import apply_delta, apply_lora, changed_tensors, extract_lora, flat_state, kohya_names

    yield StageStarted("load")
    try:
        base = _load(spec.model.path, spec.model.config_dir, spec.model.sha256)
    except UserError as exc:
        raise UserError(f"a {fmt} export needs the run's base model ({spec.model.path}): {exc}") from exc
    meta["concept_eraser.base_sha256"] = base.summary.sha256
    report["base_sha256"] = base.summary.sha256
    b_state, e_state = flat_state(base), flat_state(edited)
    yield StageStarted("export")
    if fmt == "delta":
        changed = changed_tensors(b_state, e_state)
        tensors = {k: e_state[k].detach().cpu().contiguous().clone() for k in changed}
        report["tensors"] = len(tensors)
        if not tensors:
            yield Log("warning", "the run's model does not differ from its base: the delta is empty")
    else:
        rank = int(options.get("rank") or DEFAULT_RANK)
        lora = extract_lora(b_state, e_state, kohya_names(edited), rank, ctx.check_cancelled)
        tensors = lora.tensors
        meta.update({"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                     "ss_network_alpha": str(rank), "ss_v2": str(edited.summary.architecture == "SD 2.x"),
                     "ss_base_model_version": {"sd": "sd_v1", "sdxl": "sdxl_base_v1-0"}[edited.summary.kind]
                     if edited.summary.architecture != "SD 2.x" else "sd_v2"})
        report["lora"] = {"rank": rank, "energy_kept": lora.energy_kept, "modules": len(lora.layers),
                          "layers": [{"name": x.name, "kohya": x.kohya, "shape": list(x.shape), "rank": x.rank,
                                      "energy_kept": x.kept} for x in lora.layers],
                          "skipped": sorted(lora.skipped), "notes": lora.notes}
        meta["concept_eraser.lora_energy_kept"] = f"{lora.energy_kept:.6f}"
        for note in lora.notes:
            yield Log("warning", note)
    ef.check_space(out, sum(t.numel() * t.element_size() for t in tensors.values()))
    save_file(tensors, str(written), metadata=meta)
    yield StageStarted("verify")
    from safetensors.torch import load_file

    loaded = load_file(str(written))
    if fmt == "delta":
        apply_delta(base, loaded)
        grid = yield from render(base, sampling, ctx)
        report["verify"] = _compare(reference, grid, sampling, "run model (delta applied to the base)")
        return
    base_grid = yield from render(base, sampling, ctx)
    apply_lora(base, loaded, 1.0)
    grid = yield from render(base, sampling, ctx)
    report["verify"] = lora_similarity(reference, grid, base_grid, sampling)


def lora_similarity(full: Grid, lora: Grid, base: Grid, sampling: SamplingSpec) -> dict[str, Any]:
    """LoRA (scale 1 on the base) vs the full edit: LPIPS when AlexNet weights exist, else SSIM distance."""
    from concept_eraser.metrics.lpips_retention import lpips_retention
    from concept_eraser.metrics.ssim_distance import ssim_distance

    d = pixel_diff(full, lora)
    out: dict[str, Any] = {"against": "run model (full edit)", "scale": 1.0, "max_pixel_diff": d / 255,
                           "max_pixel_diff_uint8": d, "base_max_pixel_diff_uint8": pixel_diff(full, base),
                           "cells": int(full.images.shape[0] * full.images.shape[1]), "seeds": list(sampling.seeds),
                           "steps": sampling.steps}
    lp = lpips_retention(full, lora)
    if lp.ok:
        out["lpips"] = lp.mean
        out["lpips_base"] = lpips_retention(full, base).mean
    else:
        out["lpips"] = None
        out["lpips_unavailable"] = lp.message
        out["ssim_distance"] = ssim_distance(full, lora).mean
        out["ssim_distance_base"] = ssim_distance(full, base).mean
    return out
