"""LocalBackend: implements spec.Backend on this process's torch, keeping the loaded model in a session."""

from __future__ import annotations

from concept_eraser.spec.events import GridReady, JobResult
from concept_eraser.spec.jobspec import DeviceSpec, ModelSource, SamplingSpec
from concept_eraser.spec.runloop import JobContext, UserError
from concept_eraser.spec.summary import DemoModel


class LocalBackend:
    def __init__(self) -> None:
        self.bundle = None  # the loaded model (a ModelBundle), owned by the jobs that run on the worker thread

    def demo_models(self) -> list[DemoModel]:
        from concept_eraser.engine.catalog import demo_models

        return demo_models()

    def load(self, source: ModelSource, ctx: JobContext, device: DeviceSpec | None = None):
        from concept_eraser.engine.jobs import load_job

        self.bundle = yield from load_job(source, ctx, device)
        return JobResult("finished", value=self.bundle.summary)

    def sample(self, spec: SamplingSpec, ctx: JobContext):
        from concept_eraser.engine.sampling import sample_grid

        if self.bundle is None:
            raise UserError("no model is loaded: load a model first")
        grid = yield from sample_grid(self.bundle, spec, ctx)
        yield GridReady("sample", grid)
        return JobResult("finished", value=grid)
