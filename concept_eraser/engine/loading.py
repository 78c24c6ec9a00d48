"""Offline model loading: bundled demo names, diffusers folders, single .safetensors/.ckpt files.

Nothing is downloaded (HF_HUB_OFFLINE=1, local_files_only=True). The user's files are only read.
Every failure the user can fix is a one-line UserError that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from concept_eraser.resources import models_dir  # noqa: E402
from concept_eraser.spec.files import sha256_file  # noqa: E402
from concept_eraser.spec.jobspec import ModelSource  # noqa: E402
from concept_eraser.spec.runloop import UserError  # noqa: E402
from concept_eraser.spec.summary import ModelSummary  # noqa: E402

from .bundle import META_FILE, ModelBundle  # noqa: E402

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_SD_PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}
_DDPM_PIPELINES = ("DDPMPipeline", "DDIMPipeline")


def resolve_path(source: ModelSource) -> Path:
    raw = source.path
    p = Path(raw).expanduser()
    if not p.exists() and "/" not in raw and "\\" not in raw and (models_dir() / raw).exists():
        p = models_dir() / raw
    if not p.exists():
        hint = " (bundled demo models: concept-eraser models)" if "/" not in raw else ""
        raise UserError(f"model not found: {raw}{hint}")
    return p


_STORED = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(path: Path) -> torch.dtype | None:
    """The floating-point dtype most of a model's safetensors tensors are stored in (None: no safetensors, or
    another float type such as F64 or F8)."""
    from .single_file import read_safetensors_dtypes

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    counts: dict[str, int] = {}
    for f in files:
        if f.suffix == ".safetensors":
            for d in read_safetensors_dtypes(f).values():
                if d.startswith(("F", "BF")):
                    counts[d] = counts.get(d, 0) + 1
    if not counts:
        return None
    return _STORED.get(max(counts, key=counts.get))


def weights_sha256(folder: Path) -> str:
    """One stable hash over a folder's weight files: sorted relative paths and each file's sha256."""
    h = hashlib.sha256()
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    for f in files:
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def load_model(source: ModelSource | str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> ModelBundle:
    if not isinstance(source, ModelSource):
        source = ModelSource(path=str(source))
    path = resolve_path(source)
    device = torch.device(device)
    dtype = dtype or torch.float32
    if path.is_file():
        from . import single_file

        bundle = single_file.load_single_file(path, source, device=device, dtype=dtype)
    elif path.is_dir():
        bundle = _load_folder(path, source, device, dtype)
    else:
        raise UserError(f"{path} is neither a folder nor a file")
    if source.sha256 and source.sha256 != bundle.summary.sha256:
        raise UserError(f"{path.name}: weights sha256 {bundle.summary.sha256[:12]}… does not match the expected "
                        f"{source.sha256[:12]}…; the file changed since the job was made")
    return bundle


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}); restore it from the original model") from exc


def _require(folder: Path, rel: str, what: str) -> None:
    if not (folder / rel).exists():
        raise UserError(f"{what} is missing: expected {folder / rel}; copy it from the original model folder")
    sub = (folder / rel).parent
    if Path(rel).name == "config.json" and not any(f.suffix in WEIGHT_SUFFIXES for f in sub.iterdir()):
        raise UserError(f"{what} has no weights: put its diffusion_pytorch_model.safetensors (or model.safetensors) "
                        f"in {sub}")


def _load_folder(path: Path, source: ModelSource, device: torch.device, dtype: torch.dtype) -> ModelBundle:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        if (path / "config.json").is_file() and _read_json(path / "config.json").get("_class_name") == "UNet2DModel":
            raise UserError(f"{path} holds a bare UNet; point to the model folder that contains model_index.json")
        raise UserError(f"{path} is not a diffusers model folder (no model_index.json); give a diffusers folder "
                        f"or a .safetensors checkpoint")
    index = _read_json(index_file)
    cls = index.get("_class_name", "")
    meta = _read_json(path / META_FILE) if (path / META_FILE).is_file() else {}
    if cls in _DDPM_PIPELINES or (set(index) & {"unet", "scheduler"} and "vae" not in index):
        return _load_ddpm(path, index, meta, device, dtype)
    if cls in _SD_PIPELINES:
        return _load_sd(path, index, meta, _SD_PIPELINES[cls], device, dtype)
    raise UserError(f"{path.name}: unknown architecture {cls or '(no _class_name)'}; supported: DDPM/DDIM "
                    f"pipelines, Stable Diffusion 1.x/2.x and SDXL")


def _params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def _load_ddpm(path, index, meta, device, dtype) -> ModelBundle:
    from diffusers import DDPMScheduler, UNet2DModel

    _require(path, "unet/config.json", "the UNet")
    _require(path, "scheduler/scheduler_config.json", "the scheduler config")
    unet = UNet2DModel.from_pretrained(path, subfolder="unet", local_files_only=True, dtype=dtype)
    unet = unet.to(device).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    n_embeds = unet.config.num_class_embeds
    if n_embeds:
        if "null_class" not in meta:
            raise UserError(f"{path.name} is class-conditional but names no null class: add {META_FILE} with "
                            f'{{"kind": "ddpm-cond", "null_class": {n_embeds - 1}}} if class {n_embeds - 1} is the null class')
        null = int(meta["null_class"])
        if not 0 <= null < n_embeds:
            raise UserError(f"{META_FILE}: null_class {null} is outside the {n_embeds} class embeddings")
        kind, num_classes = "ddpm-cond", n_embeds - 1
        names = tuple(meta.get("class_names") or ()) or None
    else:
        kind, num_classes, null, names = "ddpm", None, None, None
    summary = ModelSummary(
        kind=kind,
        architecture=f"DDPM {type(unet).__name__}{' (class-conditional)' if n_embeds else ''}",
        prediction_type=scheduler.config.prediction_type,
        resolution=int(unet.config.sample_size if isinstance(unet.config.sample_size, int) else unet.config.sample_size[0]),
        dtype=str(dtype).removeprefix("torch."),
        parameters=_params(unet),
        sha256=weights_sha256(path),
        source=str(path),
        components=("unet", "scheduler"),
        channels=unet.config.in_channels,
        num_classes=num_classes,
        null_class=null,
        class_names=names,
        default_guidance=float(meta.get("default_guidance", 1.0 if not n_embeds else 3.0)),
        default_steps=int(meta.get("default_steps", 50)),
        name=meta.get("demo"),
    )
    return ModelBundle(summary=summary, unet=unet, scheduler=scheduler, device=device, dtype=dtype, meta=meta)


def _load_sd(path, index, meta, kind, device, dtype) -> ModelBundle:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] + (["text_encoder_2", "tokenizer_2"]
                                                                        if kind == "sdxl" else [])
    for part in parts:
        if part not in index or index[part] in (None, [None, None]):
            continue
        cfg = "scheduler/scheduler_config.json" if part == "scheduler" else (
            f"{part}/tokenizer_config.json" if part.startswith("tokenizer") else f"{part}/config.json")
        _require(path, cfg, f"the {part.replace('_', ' ')}")
    pipe_cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    extra = {} if kind == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                        "requires_safety_checker": False}
    pipe = pipe_cls.from_pretrained(path, local_files_only=True, dtype=dtype, **extra)
    return _sd_bundle(pipe, kind, meta, weights_sha256(path), str(path), False, device, dtype)


def sd_architecture(pipe, kind: str) -> str:
    if kind == "sdxl":
        return "SDXL"
    dim = pipe.unet.config.cross_attention_dim
    return "SD 2.x" if dim == 1024 else ("SD 1.x" if dim == 768 else f"SD-style (cross-attention {dim})")


def _sd_bundle(pipe, kind, meta, sha, source, single, device, dtype) -> ModelBundle:
    """Prepare a loaded SD/SDXL pipeline (device, eval, no gradients, no tqdm) and wrap it."""
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if m is not None:
            m.eval().requires_grad_(False)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    sample = pipe.unet.config.sample_size
    sample = sample if isinstance(sample, int) else sample[0]
    te2 = getattr(pipe, "text_encoder_2", None)
    summary = ModelSummary(
        kind=kind,
        architecture=sd_architecture(pipe, kind),
        prediction_type=pipe.scheduler.config.prediction_type,
        resolution=int(sample * factor),
        dtype=str(dtype).removeprefix("torch."),
        parameters=_params(pipe.unet, pipe.vae, pipe.text_encoder, te2),
        sha256=sha,
        source=source,
        single_file=single,
        components=tuple(n for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None)),
        channels=3,
        default_guidance=float(meta.get("default_guidance", 5.0 if kind == "sdxl" else 7.5)),
        default_steps=int(meta.get("default_steps", 30)),
        name=meta.get("demo"),
    )
    return ModelBundle(summary=summary, unet=pipe.unet, scheduler=pipe.scheduler, device=device, dtype=dtype,
                       vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                       text_encoder_2=te2, tokenizer_2=getattr(pipe, "tokenizer_2", None), pipe=pipe, meta=meta)
