"""Single-file checkpoints (.safetensors; .ckpt only through torch.load(weights_only=True)).

The architecture is read from the tensor names. Loading goes through diffusers' from_single_file
with a local config folder, so nothing is fetched from a hub. Until the component configs of the
real SD 1.x/2.x/SDXL releases ship in resources/configs, the user names that folder (--config-dir).
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import torch

from concept_eraser.spec.files import sha256_file
from concept_eraser.spec.jobspec import ModelSource
from concept_eraser.spec.runloop import UserError

from .bundle import META_FILE, ModelBundle

_PREFIXES = {
    "sdxl": ("conditioner.embedders.",),
    "sd2": ("cond_stage_model.model.",),
    "sd1": ("cond_stage_model.transformer.",),
}


def read_safetensors_keys(path: Path) -> list[str]:
    """Tensor names from the header; a truncated or corrupt file is a one-line error."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path.name} is empty or truncated (not a safetensors file); download it again")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 1024 * 1024):
            raise UserError(f"{path.name} is not a valid safetensors file (corrupt header); download it again")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path.name} is not a valid safetensors file (corrupt header); download it again") from exc
    if not isinstance(header, dict):
        raise UserError(f"{path.name} is not a valid safetensors file (corrupt header); download it again")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise UserError(f"{path.name} is truncated ({size:,} of {8 + n + end:,} bytes); download it again")
    return [k for k in header if k != "__metadata__"]


def load_ckpt_state(path: Path) -> dict[str, torch.Tensor]:
    """A .ckpt through the safe unpickler only: tensors and plain containers, never code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe unpickler raises UnpicklingError for globals it does not allow
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or type(exc).__name__ == "UnpicklingError":
            raise UserError(f"{path.name} contains code, not only weights, and will not be loaded; convert it to "
                            f".safetensors with a tool you trust") from exc
        raise UserError(f"{path.name} is not a readable checkpoint ({type(exc).__name__}); download it again") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path.name} holds no state dict of tensors; it is not a model checkpoint")
    return state


def detect_architecture(keys) -> str:
    keys = list(keys)
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise UserError("unknown architecture: no 'model.diffusion_model.*' UNet tensors; supported single files "
                        "are Stable Diffusion 1.x, 2.x and SDXL checkpoints")
    for arch, prefixes in _PREFIXES.items():
        if any(k.startswith(prefixes) for k in keys):
            return arch
    raise UserError("unknown architecture: a UNet without a recognised text encoder (SD 1.x, 2.x or SDXL)")


def load_single_file(path: Path, source: ModelSource, device: torch.device, dtype: torch.dtype) -> ModelBundle:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        keys = read_safetensors_keys(path)
        weights = path
    elif suffix in (".ckpt", ".pt", ".pth"):
        state = load_ckpt_state(path)
        keys = list(state)
    else:
        raise UserError(f"{path.name} is not a model file: give a diffusers folder, a .safetensors or a .ckpt file")
    arch = detect_architecture(keys)
    if source.config_dir is None:
        raise UserError(f"{path.name} looks like {arch.upper()}; its component configs are not bundled yet: pass "
                        f"--config-dir with a local diffusers folder of the same architecture (weights not needed)")
    config_dir = Path(source.config_dir)
    if not (config_dir / "model_index.json").is_file():
        raise UserError(f"--config-dir {config_dir} has no model_index.json; give a diffusers model folder")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from .loading import _sd_bundle

    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    with tempfile.TemporaryDirectory() as tmp:
        if suffix != ".safetensors":
            from safetensors.torch import save_file

            weights = Path(tmp) / (path.stem + ".safetensors")
            save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
        pipe = cls.from_single_file(str(weights), config=str(config_dir), local_files_only=True, dtype=dtype, **extra)
    meta = json.loads((config_dir / META_FILE).read_text()) if (config_dir / META_FILE).is_file() else {}
    kind = "sdxl" if arch == "sdxl" else "sd"
    return _sd_bundle(pipe, kind, meta, sha256_file(path), str(path), True, device, dtype)
