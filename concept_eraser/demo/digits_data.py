"""scikit-learn's bundled 8x8 digits (1797 images, offline), upscaled for the demo models."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 16
CLASS_NAMES = tuple(str(i) for i in range(10))


def load_digits_tensor(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, size, size) in [0, 1] (ink bright on dark) and labels (N,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    # Bilinear upscaling keeps strokes smooth; clamp because interpolation can overshoot slightly.
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.from_numpy(data.target.astype(np.int64))


def split_indices(n: int, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, stratification-free split; the judge is scored on the held-out part."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - held_out)))
    return order[:cut], order[cut:]


def to_uint8_rgb(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> (N, H, W, 3) uint8, as samplers return images."""
    g = (x.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).cpu().numpy()
    return np.repeat(g[..., None], 3, axis=-1)


def from_uint8_rgb(images: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 1, size, size) float in [0, 1] (mean over channels)."""
    x = torch.from_numpy(np.array(images, copy=True)).float().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x
