"""LPIPS retention (Schioppa et al.): AlexNet-LPIPS between same-seed before/after cells of retain rows.

0 = identical, lower is better. Uses the `lpips` package's shipped linear weights (v0.1) on an
AlexNet trunk whose ImageNet weights are read from disk, never downloaded:

1. an explicit path (argument, or the CONCEPT_ERASER_ALEXNET environment variable), else
2. the torch hub cache: `torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`.

The trunk is built with no pretrained weights and the state dict is loaded from that file
(`torch.load(weights_only=True)` or safetensors); its `features.*` tensors must match AlexNet's
exactly (wrong keys or shapes are an error; the classifier weights are not used). When
the file is absent the result has status "unavailable" and a message naming the file and where to
put it; there is no fallback (a random trunk, `pnet_rand`, is not LPIPS).

Images are resized (bilinear) so that the short side is `size` px: 64 for images up to 64 px,
256 for larger ones, unless given.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from concept_eraser.spec.events import Grid

from .pairs import PairResult, paired, summarise

KEY = "lpips"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ENV_VAR = "CONCEPT_ERASER_ALEXNET"
# torchvision alexnet().features indices -> the lpips trunk's slices
_SLICE_OF = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}

_CACHE: dict[str, torch.nn.Module] = {}


def hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def alexnet_weights_path(weights: str | Path | None = None) -> Path:
    """The backbone file that would be used (it may not exist): explicit, env var, then the hub cache."""
    if weights:
        return Path(weights).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return hub_weights_path()


def missing_message(path: Path) -> str:
    return (f"LPIPS unavailable: the AlexNet backbone weights {ALEXNET_FILE} were not found at {path}. "
            f"Copy {ALEXNET_FILE} (torchvision's AlexNet ImageNet weights, 233 MB) to {hub_weights_path()} "
            f"or set {ENV_VAR} to its path. SSIM distance is reported instead, under its own name.")


def available(weights: str | Path | None = None) -> bool:
    return alexnet_weights_path(weights).is_file()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def load_lpips(weights: str | Path | None = None) -> torch.nn.Module:
    """AlexNet-LPIPS (v0.1 linear weights) with the trunk loaded from `weights`; no network access."""
    path = alexnet_weights_path(weights)
    if not path.is_file():
        raise FileNotFoundError(missing_message(path))
    cache_key = str(path.resolve())
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    import lpips
    from torchvision.models import alexnet

    state = _read_state(path)
    trunk = alexnet(weights=None)
    # Only the convolutional trunk is used; the classifier weights may be present or not.
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    try:
        trunk.features.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a torchvision AlexNet state dict: {str(exc).splitlines()[0]}") from exc
    # pnet_rand=True only means "do not download the trunk": its weights are replaced right below.
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
    for i, module in enumerate(trunk.features):
        if i not in _SLICE_OF:  # the last max-pool is not part of LPIPS
            continue
        slice_ = getattr(model.net, f"slice{_SLICE_OF[i]}")
        getattr(slice_, str(i)).load_state_dict(module.state_dict())
    model = model.eval().requires_grad_(False)
    _CACHE[cache_key] = model
    return model


def lpips_retention(before: Grid, after: Grid, rows: Sequence[int] | None = None, weights: str | Path | None = None,
                    size: int | None = None, batch: int = 64) -> PairResult:
    """Mean, per row and per cell AlexNet-LPIPS between same-seed cells of `rows` (default: all rows)."""
    path = alexnet_weights_path(weights)
    if not path.is_file():
        return PairResult(KEY, "unavailable", message=missing_message(path),
                          description="AlexNet-LPIPS v0.1 (backbone weights missing)")
    model = load_lpips(path)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return model(a, b, normalize=True).reshape(-1)

    per_cell, rows, size = paired(before, after, rows, size, distance, batch)
    n = len(rows) * before.shape[1]
    desc = (f"AlexNet-LPIPS v0.1 ({path.name}), images resized to {size} px short side, "
            f"{len(rows)} rows x {before.shape[1]} seeds = {n} same-seed pairs; 0 = identical")
    return summarise(KEY, before, per_cell, rows, size, desc)
