"""SSIM distance: 1 - SSIM (torchmetrics, Gaussian window 11, sigma 1.5, data range 1) between same-seed
before/after cells. Always available (no weights). 0 = identical, lower is better.

Images are compared in RGB at the same resolution policy as LPIPS (short side 64 px for images up
to 64 px, 256 px for larger ones), so the two numbers describe the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from concept_eraser.spec.events import Grid

from .pairs import PairResult, paired, summarise

KEY = "ssim-distance"


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    s = ssim(b, a, data_range=1.0, reduction="none")
    return (1.0 - s).reshape(-1)


def ssim_distance(before: Grid, after: Grid, rows: Sequence[int] | None = None, size: int | None = None,
                  batch: int = 64) -> PairResult:
    """Mean, per row and per cell 1 - SSIM between same-seed cells of `rows` (default: all rows)."""
    per_cell, rows, size = paired(before, after, rows, size, _distance, batch)
    n = len(rows) * before.shape[1]
    desc = (f"1 - SSIM (torchmetrics, Gaussian 11x11, sigma 1.5), RGB resized to {size} px short side, "
            f"{len(rows)} rows x {before.shape[1]} seeds = {n} same-seed pairs; 0 = identical")
    return summarise(KEY, before, per_cell, rows, size, desc)
