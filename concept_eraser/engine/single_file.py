"""Single-file checkpoints (.safetensors; .ckpt only through torch.load(weights_only=True)).

The architecture is read from the tensor names. Loading goes through diffusers' from_single_file
with a local config folder, so nothing is fetched from a hub: the component configs of the real
releases ship in resources/configs/<name> and the CLIP tokenizer is assembled from open_clip's
vocabulary (engine/clip_tokenizer.py). `--config-dir` (ModelSource.config_dir) overrides them.

Which shipped folder: SD 1.x -> sd1, SDXL -> sdxl. SD 2.x comes as 512 px epsilon or 768 px
v-prediction with identical tensors, so the file must say which (see `sd2_variant`): its
safetensors metadata (`modelspec.architecture` / `modelspec.prediction_type`, as our exporter and
kohya's sd-scripts write them), else a hint in the file name (`768`/`v-pred` -> sd2-768-v,
`512`/`base` -> sd2-512; renaming a file is the user's override), else ComfyUI's weight test (the
spread of one layer-norm bias, `V_PROBE`, is > 0.09 in v-prediction models), else sd2-768-v, the
default diffusers uses for SD 2 files.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from concept_eraser.resources import configs_dir
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
    return read_safetensors_header(path)[0]


def read_safetensors_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata from the header; a truncated or corrupt file is a one-line error."""
    header = _header(path)
    meta = header.get("__metadata__") or {}
    return [k for k in header if k != "__metadata__"], meta if isinstance(meta, dict) else {}


def read_safetensors_dtypes(path: Path) -> dict[str, str]:
    """Tensor name -> stored dtype ("F32", "F16", "BF16", ...) from the header."""
    return {k: v["dtype"] for k, v in _header(path).items() if k != "__metadata__"}


def _header(path: Path) -> dict:
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
    return header


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


V_PROBE = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def sd2_variant(path: Path, metadata: dict[str, str], probe: torch.Tensor | None = None) -> str:
    """'sd2-768-v' or 'sd2-512': metadata, file name, the V_PROBE tensor's spread, then the default (768 v)."""
    arch = str(metadata.get("modelspec.architecture", "")).lower()
    pred = str(metadata.get("modelspec.prediction_type") or metadata.get("prediction_type") or "").lower()
    if "768-v" in arch or pred in ("v", "v_prediction", "v-prediction"):
        return "sd2-768-v"
    if arch.endswith("-512") or pred == "epsilon":
        return "sd2-512"
    name = path.stem.lower()
    if re.search(r"768|v-?pred", name):
        return "sd2-768-v"
    if re.search(r"512|base", name):
        return "sd2-512"
    if probe is not None and probe.numel() > 1:
        return "sd2-768-v" if torch.std(probe.float(), unbiased=False).item() > 0.09 else "sd2-512"
    return "sd2-768-v"  # the release default, as in diffusers


def shipped_config_name(arch: str, path: Path, metadata: dict[str, str], probe: torch.Tensor | None = None) -> str:
    return sd2_variant(path, metadata, probe) if arch == "sd2" else arch


def _read_tensor(path: Path, key: str) -> torch.Tensor | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor(key) if key in f.keys() else None


def assemble_config(name: str, dest: Path) -> Path:
    """Copy the shipped config folder `name` to dest and add the CLIP vocabulary to its tokenizer folders."""
    from .clip_tokenizer import vocab_files

    src = configs_dir() / name
    if not (src / "model_index.json").is_file():
        raise UserError(f"the bundled component configs {src} are missing (reinstall concept_eraser), or pass "
                        f"--config-dir with a local diffusers folder of the same architecture (weights not needed)")
    shutil.copytree(src, dest)
    vocab_file, merges_file = vocab_files()
    for tok in (p for p in dest.glob("tokenizer*") if p.is_dir()):
        shutil.copyfile(vocab_file, tok / "vocab.json")
        shutil.copyfile(merges_file, tok / "merges.txt")
    return dest


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def load_single_file(path: Path, source: ModelSource, device: torch.device, dtype: torch.dtype) -> ModelBundle:
    suffix = path.suffix.lower()
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        keys, metadata = read_safetensors_header(path)
        weights = path
    elif suffix in (".ckpt", ".pt", ".pth"):
        state = load_ckpt_state(path)
        keys = list(state)
    else:
        raise UserError(f"{path.name} is not a model file: give a diffusers folder, a .safetensors or a .ckpt file")
    arch = detect_architecture(keys)
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from .loading import _sd_bundle

    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    with tempfile.TemporaryDirectory() as tmp:
        if source.config_dir is not None:
            config_dir = Path(source.config_dir)
            if not (config_dir / "model_index.json").is_file():
                raise UserError(f"--config-dir {config_dir} has no model_index.json; give a diffusers model folder")
            used = f"--config-dir {config_dir}"
        else:
            probe = None
            if arch == "sd2":
                probe = state.get(V_PROBE) if suffix != ".safetensors" else _read_tensor(path, V_PROBE)
            name = shipped_config_name(arch, path, metadata, probe)
            config_dir = assemble_config(name, Path(tmp) / name)
            used = f"the bundled {name} configs"
        if suffix != ".safetensors":
            from safetensors.torch import save_file

            weights = Path(tmp) / (path.stem + ".safetensors")
            save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
        try:
            pipe = cls.from_single_file(str(weights), config=str(config_dir), local_files_only=True, dtype=dtype,
                                        **extra)
        except Exception as exc:  # diffusers raises KeyError/RuntimeError/ValueError for tensors that do not fit
            raise UserError(f"{path.name} looks like {arch.upper()} but does not load with {used} "
                            f"({_one_line(exc)}); pass --config-dir with a local diffusers folder of its exact "
                            f"variant (weights not needed)") from exc
        meta = json.loads((config_dir / META_FILE).read_text()) if (config_dir / META_FILE).is_file() else {}
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is not None and any(p.is_meta for p in module.parameters()):
            raise UserError(f"{path.name} lacks weights of the {part.replace('_', ' ')} that {used} describe; "
                            f"pass --config-dir with a local diffusers folder of its exact variant")
    kind = "sdxl" if arch == "sdxl" else "sd"
    return _sd_bundle(pipe, kind, meta, sha256_file(path), str(path), True, device, dtype)
