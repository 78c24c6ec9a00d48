"""Safe writing for exports: target checks, free space, a staging folder beside the target, metadata.

An export is written into a hidden staging folder beside its target (`.<name>.export-XXXX/`),
verified there, then renamed into place; any failure or cancel removes the staging folder, so the
target is either absent (or the old one) or complete. Nothing is written inside the source model's
folder or the run's own `model/` folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from concept_eraser import __version__
from concept_eraser.spec.runloop import UserError

MARGIN = 16 * 1024 * 1024  # bytes kept free beyond the estimate


def check_target(out: Path, force: bool, protected: list[Path]) -> Path:
    """Refuse an existing target without --force and any target inside a protected folder (or equal to a file)."""
    out = Path(out).expanduser()
    target = out.resolve()
    for p in protected:
        src = Path(p).expanduser().resolve()
        if target == src or (src.is_dir() and target.is_relative_to(src)) or (target.is_dir() and
                                                                               src.is_relative_to(target)):
            raise UserError(f"{out} is inside (or holds) {src}, which is only read; write the export somewhere else")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; choose another --out or pass --force to replace it")
    return out


def existing_parent(path: Path) -> Path:
    p = Path(path).resolve().parent
    while not p.exists():
        p = p.parent
    return p


def check_space(out: Path, needed: int) -> None:
    """One-line refusal when the target's disk has less free space than `needed` bytes (+ a margin)."""
    free = shutil.disk_usage(existing_parent(out)).free
    if free < needed + MARGIN:
        raise UserError(f"not enough disk space for {out.name}: needs about {_mb(needed + MARGIN)}, "
                        f"{_mb(free)} free on {existing_parent(out)}; free some space or choose another --out")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out`; yields the path to write (staging/<out.name>); removed on any exit."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        yield stage / out.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(written: Path, out: Path) -> Path:
    """Rename the staged file/folder onto `out`; an old target (only with --force) goes after the rename."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(written, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    return out


def export_metadata(fmt: str, job_json: str, base_sha256: str, method: str | None, scores: dict) -> dict[str, str]:
    """The strings every exported safetensors header carries (`__metadata__`)."""
    summary = {k: v for k, v in scores.items() if isinstance(v, int | float) or v is None}
    return {
        "concept_eraser.format": fmt,
        "concept_eraser.version": __version__,
        "concept_eraser.method": method or "",
        "concept_eraser.base_sha256": base_sha256,
        "concept_eraser.job": job_json,
        "concept_eraser.scores": json.dumps(summary, sort_keys=True),
    }


def add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite a safetensors file with `metadata` merged into its header (its own entries, e.g. format=pt, kept)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    meta.update(metadata)
    tensors = load_file(str(path))
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def add_metadata_to_folder(folder: Path, metadata: dict[str, str]) -> list[Path]:
    files = sorted(folder.rglob("*.safetensors"))
    for f in files:
        add_metadata(f, metadata)
    return files


def write_verify(out: Path, report: dict) -> Path:
    from concept_eraser.spec.files import atomic_write_text

    return atomic_write_text(Path(str(out) + ".verify.json"), json.dumps(report, indent=2, default=str) + "\n")
