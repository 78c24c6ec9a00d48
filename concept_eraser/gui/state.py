"""AppState: what the pages share (backend, runner, loaded model, last run, settings). Qt-side, torch-free."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, QStandardPaths, Signal

from concept_eraser.spec.jobspec import DeviceSpec, ModelSource
from concept_eraser.spec.registry import RunOutcome
from concept_eraser.spec.runloop import CancelToken, JobContext
from concept_eraser.spec.summary import ModelSummary

from .runner import JobRunner

ORG, APP = "concept_eraser", "concept_eraser"


def make_settings() -> QSettings:
    """INI settings in the user scope; tests point QSettings.setPath at a temporary folder."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG, APP)


class AppState(QObject):
    backend_ready = Signal()
    model_changed = Signal()
    outcome_changed = Signal()
    metric_arrived = Signal(str, float)

    def __init__(self, runner: JobRunner, settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.settings = settings or make_settings()
        self.backend: Any = None
        self.summary: ModelSummary | None = None
        self.source: ModelSource | None = None
        self.device = DeviceSpec()
        self.outcome: RunOutcome | None = None
        self.run_dir: str | None = None
        self.per_cell: dict[str, Any] = {}
        self.draft: Callable[[], dict[str, Any]] = dict  # the main window sets: merged spec parts of all pages
        self.build_spec: Callable[[], Any] = lambda: None  # the main window sets: the validated JobSpec
        self.concept_rows: Callable[[], list[dict[str, Any]]] = list  # the Forget page's concepts as grid rows

    def offer(self, name: str, *args: Any, default: Any = None) -> Any:
        """Call a descriptor of the backend (demo_models, methods, metrics, export_formats) on the GUI thread.

        A backend that does not implement it yet answers `default` (the page then says so) instead of raising
        inside a Qt slot.
        """
        fn = getattr(self.backend, name, None)
        if fn is None:
            return default
        try:
            return fn(*args)
        except NotImplementedError:
            return default

    def set_backend(self, backend: Any) -> None:
        self.backend = backend
        self.backend_ready.emit()

    def set_model(self, source: ModelSource | None, summary: ModelSummary | None, device: DeviceSpec) -> None:
        self.source, self.summary, self.device = source, summary, device
        self.outcome, self.run_dir = None, None
        self.model_changed.emit()

    def set_outcome(self, outcome: RunOutcome | None, run_dir: str | None) -> None:
        self.outcome, self.run_dir = outcome, run_dir
        self.outcome_changed.emit()

    def runs_dir(self) -> Path:
        base = os.environ.get("CONCEPT_ERASER_RUNS") or self.settings.value("runs_dir", "")
        if not base:
            base = str(Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "runs")
        return Path(str(base))

    def eval_samples(self) -> int:
        """Judged evaluation samples per grid row for the demo models (0 = no judged scores)."""
        try:
            return max(0, int(self.settings.value("eval_samples", 100)))
        except (TypeError, ValueError):
            return 100

    def new_context(self) -> JobContext:
        every = int(self.settings.value("preview_every", 10))
        return JobContext(cancel=CancelToken(), device=self.device.device, workdir=self.runs_dir(), preview_every=every)

    def add_recent_run(self, run_dir: str) -> None:
        recent = [r for r in self.recent_runs() if r != run_dir]
        self.settings.setValue("recent_runs", [run_dir, *recent][:8])

    def recent_runs(self) -> list[str]:
        value = self.settings.value("recent_runs", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]
