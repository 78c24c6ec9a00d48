"""The protocol the GUI talks to. LocalBackend implements it on the torch side; tests use a fake.

Every long call returns a job generator: calling it runs nothing until the runner iterates it on a
worker thread.
"""

from __future__ import annotations

from typing import Protocol

from .events import Job
from .jobspec import ModelSource, SamplingSpec
from .runloop import JobContext
from .summary import DemoModel


class Backend(Protocol):
    def demo_models(self) -> list[DemoModel]: ...

    def load(self, source: ModelSource, ctx: JobContext) -> Job:
        """Load a model into the session; JobResult.value is its ModelSummary."""
        ...

    def sample(self, spec: SamplingSpec, ctx: JobContext) -> Job:
        """Same-seed grid from the loaded model; JobResult.value is a Grid."""
        ...
