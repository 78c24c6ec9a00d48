"""Jobs: generators that yield events and return a JobResult (driven by the CLI or the GUI runner)."""

from __future__ import annotations

from concept_eraser.spec.events import GridReady, JobResult, StageStarted
from concept_eraser.spec.jobspec import DeviceSpec, ModelSource, SamplingSpec
from concept_eraser.spec.runloop import JobContext

from .devices import resolve_device, resolve_dtype


def load_job(source: ModelSource, ctx: JobContext, device: DeviceSpec | None = None):
    from .loading import load_model

    yield StageStarted("load")
    dev = resolve_device(device.device if device else ctx.device)
    bundle = load_model(source, device=dev, dtype=resolve_dtype(device.dtype if device else "auto", dev))
    return bundle


def sample_job(source: ModelSource, spec: SamplingSpec, ctx: JobContext):
    from .sampling import sample_grid

    bundle = yield from load_job(source, ctx)
    grid = yield from sample_grid(bundle, spec, ctx)
    yield GridReady("sample", grid)
    return JobResult("finished", value=grid)
