"""LocalBackend: implements spec.Backend on this process's torch, keeping the loaded model in a session."""

from __future__ import annotations

from typing import Any

from concept_eraser.spec.events import GridReady, JobResult
from concept_eraser.spec.jobspec import DeviceSpec, JobSpec, ModelSource, SamplingSpec
from concept_eraser.spec.registry import ExportFormat, MethodCard, MetricInfo
from concept_eraser.spec.runloop import JobContext, UserError
from concept_eraser.spec.summary import DemoModel, ModelSummary


class LocalBackend:
    def __init__(self) -> None:
        from concept_eraser.engine.session import Session

        self.session = Session()  # the loaded model, owned by the jobs that run on the worker thread

    @property
    def bundle(self):
        return self.session.bundle

    def demo_models(self) -> list[DemoModel]:
        from concept_eraser.engine.catalog import demo_models

        return demo_models()

    def methods(self) -> list[MethodCard]:
        from concept_eraser.methods import cards

        return cards()

    def metrics(self) -> list[MetricInfo]:
        from concept_eraser.metrics import METRICS  # torch-free registry

        return list(METRICS.values())

    def warmup(self) -> None:
        """Import, on the caller's (worker) thread, every module the GUI's quick descriptor calls need later."""
        import concept_eraser.engine.export  # noqa: F401  (export_formats)

        self.demo_models()
        self.methods()
        self.metrics()

    def export_formats(self, summary: ModelSummary) -> list[ExportFormat]:
        from concept_eraser.engine.export import export_formats

        return export_formats(summary)

    def load(self, source: ModelSource, ctx: JobContext, device: DeviceSpec | None = None):
        from concept_eraser.engine.jobs import load_job

        self.session.set_bundle((yield from load_job(source, ctx, device)))
        return JobResult("finished", value=self.bundle.summary)

    def sample(self, spec: SamplingSpec, ctx: JobContext):
        from concept_eraser.engine.sampling import sample_grid

        if self.bundle is None:
            raise UserError("no model is loaded: load a model first")
        grid = yield from sample_grid(self.bundle, spec, ctx)
        yield GridReady("sample", grid)
        return JobResult("finished", value=grid)

    def unlearn(self, spec: JobSpec, ctx: JobContext, run_dir: str, resume: bool = False, samples: int = 100):
        """Reuses the loaded model when it is the job's model (same source), else loads the job's."""
        from concept_eraser.engine.unlearn_job import unlearn_job

        b = self.bundle
        same = b is not None and spec.model.path in (b.summary.source, b.summary.name) and (
            spec.model.sha256 in (None, b.summary.sha256))
        if not same:
            self.session.set_bundle(None)  # type: ignore[arg-type]
        return (yield from unlearn_job(spec, ctx, run_dir, resume=resume, session=self.session, samples=samples))

    def evaluate(self, run_dir: str, ctx: JobContext, leaks: bool = False, options: dict[str, Any] | None = None):
        """Scores (and leak tests) of a finished run folder against its job's original model; writes
        report.json/report.html into the run folder (or options["out"]). options: samples (judged samples
        per row, default 100), original (another original model), and the leak-test options of
        metrics.evaluate. Reuses the loaded model when it is the run's original and holds no edits."""
        from concept_eraser.metrics.evaluate import evaluate_job, resolve_edited

        opts = dict(options or {})
        samples = int(opts.pop("samples", 100))
        out = opts.pop("out", None)
        original = opts.pop("original", None)
        _, spec, _ = resolve_edited(run_dir)
        b = self.bundle
        if original is None and spec is not None and b is not None and self.session.original is None and spec.model.path in (
                b.summary.source, b.summary.name) and spec.model.sha256 in (None, b.summary.sha256):
            original = b
        return (yield from evaluate_job(original, run_dir, None, ctx, leaks=leaks, samples=samples, out_dir=out,
                                        options=opts))

    def export(self, run_dir: str, fmt: str, out: str, ctx: JobContext, options: dict[str, Any] | None = None):
        """options: force, rank (lora), seeds / verify_steps, config_dir; JobResult.value is the verify report."""
        from concept_eraser.engine.export import export_job

        return (yield from export_job(run_dir, fmt, out, ctx, options))
