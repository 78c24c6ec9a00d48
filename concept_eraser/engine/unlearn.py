"""What a method sees while it runs: the loaded model, the job, its resolved inputs, and the run folder.

The unlearn job (load -> before grid -> method -> after grid -> scores) builds an UnlearnRun and calls
`method.run(run, config)`. `run.train(...)` wraps the shared training loop with this run's folder
(checkpoints), resume flag, seed and previews.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from concept_eraser.spec.events import Event, Preview
from concept_eraser.spec.jobspec import Concept, JobSpec, SampleRow, SamplingSpec
from concept_eraser.spec.runloop import JobContext, quiet

from .bundle import ModelBundle
from .denoise import CondItem
from .training import LossFn, TrainSettings, train


def concept_item(c: Concept | None) -> CondItem:
    """A Concept as a conditioning item: its text, its label, or ∅ when None."""
    if c is None:
        return None
    return c.text if c.text is not None else c.label


def row_item(r: SampleRow) -> CondItem:
    return r.prompt if r.prompt is not None else r.label


@dataclass
class ForgetInputs:
    concepts: list[Concept]
    anchor: Concept | None
    retain: list[SampleRow]
    images: torch.Tensor | None = None  # (N, C, H, W) pixels in [-1, 1] at the model's native size
    image_items: list[CondItem] | None = None  # per image: its prompt/label (default: the first concept, or ∅)

    @property
    def forget_items(self) -> list[CondItem]:
        return [concept_item(c) for c in self.concepts]

    @property
    def anchor_item(self) -> CondItem:
        return concept_item(self.anchor)

    @property
    def retain_items(self) -> list[CondItem]:
        return [row_item(r) for r in self.retain]


@dataclass
class UnlearnRun:
    bundle: ModelBundle
    spec: JobSpec
    ctx: JobContext
    run_dir: Path
    inputs: ForgetInputs
    resume: bool = False
    preview_spec: SamplingSpec | None = None  # small same-seed grid shown during training
    stats: dict[str, float] = field(default_factory=dict)

    def preview(self, step: int) -> Generator[Event, None, None]:
        if self.preview_spec is None:
            return
        from .sampling import sample_grid

        grid = yield from quiet(sample_grid(self.bundle, self.preview_spec, self.ctx))
        images = tuple(grid.images.reshape(-1, *grid.images.shape[2:]))
        captions = tuple(f"{lab} · seed {s}" for lab in grid.row_labels for s in grid.seeds)
        yield Preview("unlearn", step, images, captions)

    def train(self, params: dict[str, torch.nn.Parameter], loss_fn: LossFn, settings: TrainSettings,
              extra: dict | None = None) -> Generator[Event, None, dict[str, float]]:
        meta = {"method": self.spec.method or "", "job": self.spec.to_json(), **(extra or {})}
        preview: Callable | None = self.preview if self.preview_spec is not None else None
        return (yield from train(params, loss_fn, settings, self.ctx, run_dir=self.run_dir, resume=self.resume,
                                 extra=meta, preview=preview))
