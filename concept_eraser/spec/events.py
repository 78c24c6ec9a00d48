"""Events a job yields and the result it returns. Torch-free: they cross the GUI/engine wall.

Images travel as read-only uint8 numpy arrays (H, W, 3); the GUI turns them into QImages on its own thread.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


def _frozen_images(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8:
        raise TypeError(f"grid images must be uint8, got {images.dtype}")
    out = np.ascontiguousarray(images)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class Grid:
    """Same-seed image grid: images[r, c] is row r (prompt/class/unconditional) with seed c."""

    images: np.ndarray  # uint8 (rows, cols, H, W, 3)
    row_labels: tuple[str, ...]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        imgs = _frozen_images(self.images)
        if imgs.ndim != 5 or imgs.shape[-1] != 3:
            raise ValueError(f"grid images must have shape (rows, cols, H, W, 3), got {imgs.shape}")
        if imgs.shape[0] != len(self.row_labels) or imgs.shape[1] != len(self.seeds):
            raise ValueError(
                f"grid of {imgs.shape[:2]} cells does not match {len(self.row_labels)} rows x {len(self.seeds)} seeds"
            )
        object.__setattr__(self, "images", imgs)

    @property
    def shape(self) -> tuple[int, int]:
        return self.images.shape[0], self.images.shape[1]

    def tiled(self, pad: int = 2, background: int = 255) -> np.ndarray:
        """One uint8 image of all cells with `pad` pixels between them (for PNG files)."""
        rows, cols, h, w, _ = self.images.shape
        out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.uint8)
        for r in range(rows):
            for c in range(cols):
                y, x = pad + r * (h + pad), pad + c * (w + pad)
                out[y : y + h, x : x + w] = self.images[r, c]
        return out


@dataclass(frozen=True)
class StageStarted:
    stage: str  # "load", "sample", "sample_before", "unlearn", "sample_after", "metrics", "export", "train"
    total: int | None = None


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int | None
    scalars: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    stage: str
    step: int
    images: tuple[np.ndarray, ...]
    captions: tuple[str, ...]


@dataclass(frozen=True)
class GridReady:
    which: Literal["before", "after", "sample"]
    grid: Grid


@dataclass(frozen=True)
class MetricReady:
    key: str
    value: float
    per_cell: np.ndarray | None = None


@dataclass(frozen=True)
class Log:
    level: Literal["info", "warning"]
    message: str


Event = StageStarted | Progress | Preview | GridReady | MetricReady | Log


@dataclass(frozen=True)
class JobResult:
    status: Literal["finished", "cancelled", "failed"]
    value: Any = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # one line for the user
    details: str | None = None  # traceback for "Copy details"
    user_error: bool = False  # failed on input the user can fix (CLI exit code 2)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


Job = Generator[Event, None, JobResult]
