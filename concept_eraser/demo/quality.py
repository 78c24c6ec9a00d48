"""Quality of the demo models, judged on fixed-seed samples (the README's table)."""

from __future__ import annotations

import numpy as np

from concept_eraser.spec.events import JobResult, Log
from concept_eraser.spec.jobspec import ModelSource, SampleRow, SamplingSpec
from concept_eraser.spec.runloop import JobContext


def digits_quality(bundle, judge, samples: int, ctx: JobContext, seed0: int = 0, uncond_factor: int = 5,
                   steps: int | None = None, guidance: float | None = None, scheduler: str = "ddim"):
    """Per-class judged accuracy (class-conditioned) and class shares of unconditional samples."""
    from concept_eraser.engine.sampling import sample_grid

    s = bundle.summary
    steps = steps or s.default_steps
    seeds = list(range(seed0, seed0 + samples))
    spec = SamplingSpec(rows=[SampleRow(label=c) for c in range(s.num_classes)], seeds=seeds, steps=steps,
                        guidance=guidance, scheduler=scheduler, batch_size=500)
    grid = yield from sample_grid(bundle, spec, ctx)
    acc = {}
    for c in range(s.num_classes):
        acc[c] = float((judge.predict(grid.images[c]) == c).mean())
    useeds = list(range(seed0, seed0 + samples * uncond_factor))
    ugrid = yield from sample_grid(bundle, spec.model_copy(update={"rows": [SampleRow()], "seeds": useeds}), ctx)
    pred = judge.predict(ugrid.images[0])
    shares = {c: float((pred == c).mean()) for c in range(s.num_classes)}
    lines = [f"digits quality: {samples} samples per class (seeds {seed0}-{seed0 + samples - 1}), "
             f"{len(useeds)} unconditional; {scheduler} {steps} steps, guidance {spec.guidance or s.default_guidance}",
             "class  judged-correct  unconditional-share"]
    for c in range(s.num_classes):
        lines.append(f"{c:>5}  {acc[c] * 100:13.1f}%  {shares[c] * 100:18.1f}%")
    lines.append(f"  all  {np.mean(list(acc.values())) * 100:13.1f}%  min {min(shares.values()) * 100:.1f}% "
                 f"max {max(shares.values()) * 100:.1f}%")
    return {"accuracy": acc, "unconditional_share": shares, "samples": samples, "steps": steps,
            "guidance": spec.guidance or s.default_guidance, "text": "\n".join(lines)}


def quality_job(name: str, samples: int = 200, ctx: JobContext | None = None):
    from concept_eraser.engine.jobs import load_job

    ctx = ctx or JobContext()
    bundle = yield from load_job(ModelSource(path=name), ctx)
    if name == "digits":
        from .digits_judge import load_digits_judge

        table = yield from digits_quality(bundle, load_digits_judge(), samples, ctx)
    else:
        from .shapes_quality import shapes_quality

        table = yield from shapes_quality(bundle, samples=samples, ctx=ctx)
    yield Log("info", "quality measured")
    return JobResult("finished", value=table)
