"""Interference matrix: what erasing each concept does to every concept's prompts.

Rows = edits (an edited model per erased concept, or one multi-concept run as a single row), columns =
concepts (the erased ones and the ones that should stay). Each column's prompt (shapes: the plain
caption with the concept; digits: the class label; other SD models: the concept text) is sampled by
the original model and by each edited model with the same seeds; the concept is judged in each image
(metrics.recognition). Cell = recognition rate after / rate on the original model:
~0 on an erased concept's own column, ~1 where nothing should change; a low off-diagonal value is
interference (erasing i also removed j).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from concept_eraser.spec.runloop import JobContext

KEY = "interference"


@dataclass
class InterferenceResult:
    rows: list[str]  # edit names
    cols: list[str]  # concept names
    prompts: list[str]  # one per column (the row of the sampled grid)
    before: np.ndarray  # (C,) recognition rate on the original model
    after: np.ndarray  # (R, C) recognition rate on each edited model
    ratio: np.ndarray  # (R, C) after / before (NaN where before is 0)
    seeds: list[int] = field(default_factory=list)
    description: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        def clean(a):
            return [[None if v != v else float(v) for v in row] for row in np.atleast_2d(a)]

        return {"rows": self.rows, "cols": self.cols, "prompts": self.prompts, "before": clean(self.before)[0],
                "after": clean(self.after), "ratio": clean(self.ratio), "seeds": self.seeds,
                "description": self.description, "seconds": round(self.seconds, 3)}


def concept_row(original, concept):
    """The SampleRow that shows `concept` on this model."""
    from concept_eraser.spec.jobspec import SampleRow

    from .recognition import concept_of

    c = concept_of(concept)
    name = original.summary.name
    if original.summary.conditioning == "class":
        from .judged import digit_label

        return SampleRow(label=digit_label(c) if name == "digits" else int(c.label))
    if name == "shapes":
        from .paraphrase import shapes_probes

        return SampleRow(prompt=shapes_probes(c.text)[0][1])
    return SampleRow(prompt=c.text)


def interference_matrix(original, edits: Mapping[str, object], concepts: Sequence, samples: int = 8,
                        seed0: int = 3000, steps: int | None = None, ctx: JobContext | None = None,
                        ) -> InterferenceResult:
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.engine.unlearn_job import cached_grid
    from concept_eraser.spec.jobspec import SamplingSpec
    from concept_eraser.spec.runloop import run_blocking

    from .judged import EVAL_BATCH
    from .recognition import concept_name, recogniser

    t0 = time.perf_counter()
    ctx = ctx or JobContext()
    seeds = list(range(seed0, seed0 + samples))
    rows = [concept_row(original, c) for c in concepts]
    judges = [recogniser(original, c)[0] for c in concepts]
    spec = SamplingSpec(rows=rows, seeds=seeds, steps=steps or original.summary.default_steps,
                        batch_size=EVAL_BATCH)
    before_grid = run_blocking(cached_grid(original, spec, ctx, "sample_before"))
    before = np.array([np.mean(judges[j](before_grid.images[j])) for j in range(len(rows))])
    after = np.zeros((len(edits), len(rows)))
    for i, bundle in enumerate(edits.values()):
        g = run_blocking(sample_grid(bundle, spec, ctx))
        after[i] = [np.mean(judges[j](g.images[j])) for j in range(len(rows))]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(before > 0, after / np.where(before > 0, before, 1), np.nan)
    labels = [r.describe(original.summary.class_names) for r in rows]
    desc = (f"{len(edits)} edit(s) x {len(rows)} concepts, {samples} seeds ({seeds[0]}-{seeds[-1]}), "
            f"{spec.steps} steps; cell = recognition rate after / before on the concept's prompt")
    return InterferenceResult(list(edits), [concept_name(c) for c in concepts], labels, before, after, ratio, seeds,
                              desc, time.perf_counter() - t0)


__all__ = ["InterferenceResult", "concept_row", "interference_matrix"]
