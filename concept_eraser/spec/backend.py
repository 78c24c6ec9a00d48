"""The protocol the GUI talks to. LocalBackend implements it on the torch side; tests use a fake.

Every long call returns a job generator: calling it runs nothing until the runner iterates it on a
worker thread. Jobs yield events (spec.events) and return a JobResult whose `value` is named below.
"""

from __future__ import annotations

from typing import Any, Protocol

from .events import Job
from .jobspec import DeviceSpec, JobSpec, ModelSource, SamplingSpec
from .registry import ExportFormat, MethodCard, MetricInfo
from .runloop import JobContext
from .summary import DemoModel, ModelSummary


class Backend(Protocol):
    def demo_models(self) -> list[DemoModel]: ...

    def methods(self) -> list[MethodCard]:
        """Every registered method with its config's JSON schema (the GUI builds its form from it)."""
        ...

    def metrics(self) -> list[MetricInfo]: ...

    def export_formats(self, summary: ModelSummary) -> list[ExportFormat]: ...

    def load(self, source: ModelSource, ctx: JobContext, device: DeviceSpec | None = None) -> Job:
        """Load a model into the session; JobResult.value is its ModelSummary."""
        ...

    def sample(self, spec: SamplingSpec, ctx: JobContext) -> Job:
        """Same-seed grid from the loaded model; JobResult.value is a Grid."""
        ...

    def unlearn(self, spec: JobSpec, ctx: JobContext, run_dir: str, resume: bool = False) -> Job:
        """Before grid -> method -> after grid -> scores, in run_dir; JobResult.value is a RunOutcome.

        Events: StageStarted("sample_before" | "unlearn" | "sample_after" | "metrics"), Progress("unlearn",
        step, total, {"loss": ...}), Preview("unlearn", step, ...) at step 0 and every ctx.preview_every,
        GridReady("before" | "after"), MetricReady per score. resume=True continues from run_dir's
        last checkpoint. A failed or cancelled run restores the loaded model.
        """
        ...

    def evaluate(self, run_dir: str, ctx: JobContext, leaks: bool = False, options: dict[str, Any] | None = None) -> Job:
        """Scores (and with leaks=True the leak tests) of a finished run; JobResult.value is a dict report."""
        ...

    def export(self, run_dir: str, fmt: str, out: str, ctx: JobContext, options: dict[str, Any] | None = None) -> Job:
        """Write the edited model in `fmt` to `out` and verify it; JobResult.value is a dict of verification results."""
        ...
