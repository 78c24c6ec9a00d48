"""What the paired (same-seed before/after) metrics share: the result type and image preparation.

A `PairResult` holds the mean over the evaluated cells, one value per evaluated row (prompt) and a
per-cell array shaped like the grid (rows x seeds) for the GUI's heat overlay; rows that were not
evaluated (e.g. forget rows) are NaN there. `status` is "ok" or "unavailable" (with `message`
saying exactly what is missing); an unavailable result carries no numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from concept_eraser.spec.events import Grid, MetricReady


@dataclass(frozen=True)
class PairResult:
    key: str  # "lpips", "ssim-distance"
    status: Literal["ok", "unavailable"]
    mean: float = float("nan")
    per_row: dict[str, float] = field(default_factory=dict)  # row label -> mean over its seeds
    per_cell: np.ndarray | None = None  # float (rows, cols) like the grid; NaN where not evaluated
    size: int | None = None  # short side in pixels the images were compared at
    cells: int = 0  # number of (row, seed) cells averaged
    description: str = ""  # backbone, resolution, sample count
    message: str = ""  # for "unavailable": the exact file and where to put it

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def event(self) -> MetricReady:
        return MetricReady(self.key, self.mean, self.per_cell)


def check_pair(before: Grid, after: Grid) -> None:
    if before.images.shape != after.images.shape:
        raise ValueError(f"before and after grids differ in shape: {before.images.shape} vs {after.images.shape}")
    if tuple(before.seeds) != tuple(after.seeds) or tuple(before.row_labels) != tuple(after.row_labels):
        raise ValueError("before and after grids must have the same rows and seeds (same-seed protocol)")


def select_rows(grid: Grid, rows: Sequence[int] | None) -> list[int]:
    n = grid.shape[0]
    rows = list(range(n)) if rows is None else [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < n]
    if bad or not rows:
        raise ValueError(f"rows {bad or rows} are not rows of a grid with {n} rows")
    return rows


def default_size(h: int, w: int) -> int:
    """Short side to compare at: at least 64 px; 256 px for larger (real SD) images."""
    short = min(h, w)
    return 64 if short <= 64 else 256


def to_float(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, h, w) in [0, 1] with the short side resized to `size`."""
    x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        out = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = F.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=min(h, w) > size)
        x = x.clamp(0, 1)
    return x


def paired(before: Grid, after: Grid, rows: Sequence[int] | None, size: int | None, distance,
           batch: int = 64) -> tuple[np.ndarray, list[int], int]:
    """Apply `distance(a, b) -> (N,)` to every cell of the chosen rows; returns (per_cell, rows, size)."""
    check_pair(before, after)
    rows = select_rows(before, rows)
    _, cols, h, w, _ = before.images.shape
    size = size or default_size(h, w)
    per_cell = np.full(before.shape, np.nan, dtype=np.float64)
    cells = [(r, c) for r in rows for c in range(cols)]
    for i in range(0, len(cells), batch):
        chunk = cells[i : i + batch]
        a = to_float(np.stack([before.images[r, c] for r, c in chunk]), size)
        b = to_float(np.stack([after.images[r, c] for r, c in chunk]), size)
        with torch.no_grad():
            d = distance(a, b).double().cpu().numpy().reshape(-1)
        for (r, c), v in zip(chunk, d, strict=True):
            per_cell[r, c] = v
    return per_cell, rows, size


def summarise(key: str, grid: Grid, per_cell: np.ndarray, rows: list[int], size: int, description: str) -> PairResult:
    per_row = {grid.row_labels[r]: float(per_cell[r].mean()) for r in rows}
    values = per_cell[rows]
    per_cell.flags.writeable = False
    return PairResult(key, "ok", float(values.mean()), per_row, per_cell, size, int(values.size), description)
