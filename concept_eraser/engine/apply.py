"""Apply a delta or a LoRA file to a base model and write the result as a diffusers folder.

A delta refuses a base whose weights sha256 differs from the one in its metadata; a LoRA applies to
any model of the same architecture (a different base is only a warning) at `scale`
(0 = off, 1 = the exported edit, >1 stronger). The written folder is reloaded and its tensors
compared with the in-memory result.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import torch

from concept_eraser.spec.events import Event, JobResult, Log, StageStarted
from concept_eraser.spec.jobspec import ModelSource
from concept_eraser.spec.runloop import JobContext, UserError

from . import export_files as ef


def _kind_of(path: Path, tensors: dict, meta: dict[str, str]) -> str:
    fmt = meta.get("concept_eraser.format")
    if fmt in ("delta", "lora"):
        return fmt
    if tensors and all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in tensors):
        return "lora"
    raise UserError(f"{path.name} is neither a concept_eraser delta nor a kohya LoRA file")


def write_folder(bundle, written: Path, metadata: dict[str, str]) -> None:
    """The loaded model as a diffusers folder (safetensors, with metadata in every header)."""
    from .unlearn_job import write_model_files

    write_model_files(bundle, written)
    ef.add_metadata_to_folder(written, metadata)


def apply_job(base: str, patch: str | Path, out: str | Path, ctx: JobContext, scale: float = 1.0,
              force: bool = False, config_dir: str | None = None) -> Generator[Event, None, JobResult]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .loading import load_model, resolve_path
    from .weight_diff import apply_delta, apply_lora, flat_state

    patch = Path(patch).expanduser()
    if not patch.is_file():
        raise UserError(f"{patch} not found: give a .safetensors delta or LoRA file")
    source = ModelSource(path=str(base), config_dir=config_dir)
    out = ef.check_target(Path(out), force, [resolve_path(source), patch])
    from .single_file import read_safetensors_header

    _, meta = read_safetensors_header(patch)
    yield StageStarted("load")
    bundle = load_model(source)
    with safe_open(str(patch), "pt") as f:
        meta = dict(f.metadata() or meta)
    tensors = load_file(str(patch))
    kind = _kind_of(patch, tensors, meta)
    want = meta.get("concept_eraser.base_sha256", "")
    if kind == "delta":
        if scale != 1.0:
            raise UserError("--scale applies to LoRA files; a delta holds the edited values and applies as is")
        if want != bundle.summary.sha256:
            raise UserError(f"{patch.name} was made for the base with sha256 {want[:12]}…, but {Path(base).name} "
                            f"has {bundle.summary.sha256[:12]}…; apply it to the exact base model it came from")
        n = apply_delta(bundle, tensors)
    else:
        if want and want != bundle.summary.sha256:
            yield Log("warning", f"{patch.name} was extracted from another base ({want[:12]}…); applying anyway")
        n = apply_lora(bundle, tensors, scale)
    modules = [m for m in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2) if m is not None]
    ef.check_space(out, sum(p.numel() * p.element_size() for m in modules for p in m.state_dict().values()))
    metadata = {k: v for k, v in meta.items() if k.startswith("concept_eraser.")}
    metadata.update({"concept_eraser.format": "diffusers", "concept_eraser.applied": f"{kind} {patch.name}",
                     "concept_eraser.scale": str(scale)})
    with ef.staging(out) as written:
        yield StageStarted("export")
        write_folder(bundle, written, metadata)
        ctx.check_cancelled()
        yield StageStarted("verify")
        reloaded = load_model(ModelSource(path=str(written)))
        mine, theirs = flat_state(bundle), flat_state(reloaded)
        identical = all(torch.equal(mine[k], theirs[k]) for k in mine)
        if not identical:
            raise UserError(f"the written folder does not reload to the applied model; nothing was written to {out}")
        ef.move_into_place(written, out)
    report = {"format": "diffusers", "out": str(out), "base": str(base), "applied": kind, "patch": str(patch),
              "scale": scale, "tensors_or_modules": n, "verify": {"reloaded_tensors_identical": identical}}
    report["verify_file"] = str(ef.write_verify(out, report))
    yield Log("info", f"wrote {out}")
    return JobResult("finished", value=report, outputs={"model": str(out)})
