"""Run step: start, watch (progress with ETA, live loss, previews from step 0), cancel and resume the run."""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.events import (
    Grid,
    GridReady,
    JobResult,
    Log,
    MetricReady,
    Preview,
    Progress,
    StageStarted,
)
from concept_eraser.spec.jobspec import save_job
from concept_eraser.spec.runloop import UserError

from ..state import AppState
from ..widgets.images import ImageStripWidget, LossPlotWidget
from .base import Page

STAGE_TITLES = {"sample_before": "Sampling the before grid", "unlearn": "Unlearning", "sample_after": "Sampling the after grid",
                "metrics": "Scoring", "load": "Loading"}


def has_checkpoint(run_dir: str | None) -> bool:
    """A run folder that can be resumed holds a checkpoint.* (the engine writes checkpoint.pt) at most one level down."""
    if not run_dir or not Path(run_dir).is_dir():
        return False
    return any(Path(run_dir).glob("checkpoint.*")) or any(Path(run_dir).glob("*/checkpoint.*"))


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class RunPage(Page):
    title = "5 · Run"
    subtitle = "Runs the method on a copy of the model, then samples the same grid again and scores it."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        self.job_label = QLabel("")
        self.job_label.setWordWrap(True)
        self.layout_.addWidget(self.job_label)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("&Start")
        self.start_button.setToolTip("Start the run (Ctrl+R).")
        self.start_button.setShortcut("Ctrl+R")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("&Cancel")
        self.cancel_button.setToolTip("Stop within one step; the loaded model is restored.")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Res&ume")
        self.resume_button.setToolTip("Continue the interrupted run from its last checkpoint.")
        self.resume_button.clicked.connect(self.resume)
        for b in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.layout_.addLayout(buttons)
        prog = QHBoxLayout()
        self.stage_label = QLabel("Not started.")
        self.progress_bar = QProgressBar()
        self.progress_bar.setAccessibleName("Run progress")
        self.eta_label = QLabel("")
        prog.addWidget(self.stage_label)
        prog.addWidget(self.progress_bar, 1)
        prog.addWidget(self.eta_label)
        self.layout_.addLayout(prog)
        self.error_row = QWidget()
        er = QHBoxLayout(self.error_row)
        er.setContentsMargins(0, 0, 0, 0)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00020")
        self.error_label.setWordWrap(True)
        self.copy_details_button = QPushButton("Copy &details")
        self.copy_details_button.setToolTip("Copy the full traceback to the clipboard (for a bug report).")
        self.copy_details_button.clicked.connect(self.copy_details)
        er.addWidget(self.error_label, 1)
        er.addWidget(self.copy_details_button)
        self.error_row.setVisible(False)
        self.layout_.addWidget(self.error_row)
        middle = QHBoxLayout()
        plot_box = QGroupBox("Loss")
        QVBoxLayout(plot_box).addWidget(loss := LossPlotWidget())
        self.loss_plot = loss
        middle.addWidget(plot_box, 3)
        log_box = QGroupBox("Log")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        QVBoxLayout(log_box).addWidget(self.log)
        middle.addWidget(log_box, 2)
        self.layout_.addLayout(middle, 1)
        prev_box = QGroupBox("Live previews (forgotten concept, fixed seeds)")
        prev_row = QHBoxLayout(prev_box)
        self.first_previews = ImageStripWidget(96)  # step 0: what the concept looked like
        self.previews = ImageStripWidget(96)  # the latest
        prev_row.addWidget(self.first_previews)
        prev_row.addWidget(self.previews)
        self.layout_.addWidget(prev_box)
        self.details = ""
        self.grids: dict[str, Grid] = {}  # from GridReady, in case the outcome carries no grids
        self.run_dir: str | None = None
        self.resumable = False
        self._t0 = 0.0
        self._step0 = 0
        state.runner.event.connect(self._on_event)
        state.runner.done.connect(self._on_done)
        state.runner.started.connect(lambda _n: self._update_buttons())
        state.model_changed.connect(self._reset)
        self._update_buttons()

    # actions ---------------------------------------------------------------------------------------------
    def on_enter(self) -> None:
        try:
            spec = self.state.build_spec()
        except UserError as exc:
            self.job_label.setText(f"Not ready: {exc}")
            return
        what = ", ".join(c.text or f"class {c.label}" for c in spec.concepts)
        steps = spec.method_config.get("steps", "?")
        grid = f"{len(spec.sampling.rows)}×{len(spec.sampling.seeds)}" if spec.sampling else "default"
        self.job_label.setText(f"Forget <b>{what}</b> from <b>{spec.model.path}</b> with <b>{spec.method}</b> "
                               f"({steps} steps); grid {grid}; runs in {self.state.runs_dir()}")
        self._update_buttons()

    def start(self, resume: bool = False) -> bool:
        if self.state.backend is None:
            return False
        try:
            spec = self.state.build_spec()
        except UserError as exc:
            self._show_error(str(exc), "")
            return False
        if resume and self.run_dir:
            run_dir = self.run_dir
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
            run_dir = str(self.state.runs_dir() / f"{stamp}-{spec.method}")
        ctx = self.state.new_context()
        unlearn = self.state.backend.unlearn
        options: dict[str, Any] = {"resume": resume}
        if "samples" in inspect.signature(unlearn).parameters:  # LocalBackend: judged samples per row (demo models)
            options["samples"] = self.state.eval_samples()
        job = unlearn(spec, ctx, run_dir, **options)
        if self.state.runner.busy:
            return self.state.runner.start("unlearn", job, ctx.cancel)  # refused, with the runner's message
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        if not (resume and (Path(run_dir) / "job.json").is_file()):
            # before the job runs: the folder always says what it holds. On resume the folder's own job.json
            # stays: the engine compares it with this spec to refuse resuming another job.
            save_job(spec, Path(run_dir) / "job.json")
        if not self.state.runner.start("unlearn", job, ctx.cancel):
            return False
        self.run_dir = run_dir
        self.error_row.setVisible(False)
        self.previews.set_images([], title="")
        self.first_previews.set_images([], title="")
        self.state.per_cell.clear()
        self.grids.clear()
        self.log.appendPlainText(f"{'resuming' if resume else 'starting'} run in {run_dir}")
        self._update_buttons()
        return True

    def offer_resume(self, run_dir: str) -> None:
        """Make an interrupted run (e.g. reopened from Recent runs) resumable, once its model is loaded."""
        self._resume_candidate = run_dir if has_checkpoint(run_dir) else None

    def resume(self) -> bool:
        return self.start(resume=True)

    def cancel(self) -> None:
        if self.state.runner.current == "unlearn":
            self.state.runner.cancel()
            self.stage_label.setText("Cancelling…")

    def copy_details(self) -> None:
        QGuiApplication.clipboard().setText(self.details)

    # events ----------------------------------------------------------------------------------------------
    def _on_event(self, name: str, event: Any) -> None:
        if name != "unlearn":
            return
        if isinstance(event, StageStarted):
            self.stage_label.setText(STAGE_TITLES.get(event.stage, event.stage) + "…")
            self.progress_bar.setRange(0, event.total or 0)
            self.progress_bar.setValue(0)
            if event.stage == "unlearn":
                self.loss_plot.clear(event.total)
                self._t0, self._step0 = time.monotonic(), -1
        elif isinstance(event, Progress):
            if event.total:
                self.progress_bar.setRange(0, event.total)
            self.progress_bar.setValue(event.step)
            if event.stage == "unlearn":
                if self._step0 < 0:
                    self._t0, self._step0 = time.monotonic(), event.step
                if "loss" in event.scalars:
                    self.loss_plot.add(event.step, event.scalars["loss"])
                done = event.step - self._step0
                if event.total and done > 0:
                    rate = (time.monotonic() - self._t0) / done
                    self.eta_label.setText(f"step {event.step}/{event.total} · ETA {_eta(rate * (event.total - event.step))}")
        elif isinstance(event, Preview):
            if not self.first_previews.pixmaps:
                self.first_previews.set_images(event.images, event.captions, f"start (step {event.step})")
            else:
                self.previews.set_images(event.images, event.captions, f"latest (step {event.step})")
        elif isinstance(event, GridReady):
            self.grids[event.which] = event.grid
            self.log.appendPlainText(f"{event.which} grid ready ({event.grid.shape[0]}×{event.grid.shape[1]})")
        elif isinstance(event, MetricReady):
            if event.per_cell is not None:
                self.state.per_cell[event.key] = event.per_cell
            self.log.appendPlainText(f"{event.key} = {event.value:.4f}")
        elif isinstance(event, Log):
            self.log.appendPlainText(("⚠ " if event.level == "warning" else "") + event.message)

    def _on_done(self, name: str, result: JobResult) -> None:
        if name != "unlearn":
            self._update_buttons()
            return
        if result.status == "finished":
            self.resumable = False
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
            self.stage_label.setText(f"Finished in {_eta(result.value.seconds)}.")
            self.eta_label.setText("")
            outcome = result.value
            if outcome.before is None or outcome.after is None:
                outcome = replace(outcome, before=outcome.before or self.grids.get("before"),
                                  after=outcome.after or self.grids.get("after"))
            self.state.add_recent_run(self.run_dir or outcome.run_dir)
            self.state.set_outcome(outcome, self.run_dir or outcome.run_dir)
        elif result.status == "cancelled":
            self.resumable = has_checkpoint(self.run_dir)
            self.stage_label.setText("Cancelled; the loaded model is unchanged."
                                     + (" Resume continues from the last checkpoint." if self.resumable else ""))
            self.log.appendPlainText("cancelled")
        else:
            self.resumable = has_checkpoint(self.run_dir)
            self._show_error(result.error or "failed", result.details or "")
            self.stage_label.setText("Failed.")
        self._update_buttons()
        self.changed.emit()

    def _show_error(self, error: str, details: str) -> None:
        self.details = details or error
        self.error_label.setText(error)
        self.copy_details_button.setVisible(bool(details))
        self.error_row.setVisible(True)
        self.log.appendPlainText(f"error: {error}")

    def _reset(self) -> None:
        candidate, self._resume_candidate = getattr(self, "_resume_candidate", None), None
        self.run_dir, self.resumable = candidate, candidate is not None
        self.loss_plot.clear()
        self.previews.set_images([])
        self.first_previews.set_images([])
        self.progress_bar.setValue(0)
        self.stage_label.setText("Not started.")
        self.eta_label.setText("")
        self.error_row.setVisible(False)
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.state.runner.current == "unlearn"
        self.start_button.setEnabled(not self.state.runner.busy and self.state.backend is not None)
        self.cancel_button.setEnabled(running)
        self.resume_button.setEnabled(not self.state.runner.busy and self.resumable)

    # wizard ----------------------------------------------------------------------------------------------
    def problem(self) -> str:
        if self.state.runner.current == "unlearn":
            return "The run is in progress…"
        if self.state.outcome is None:
            return "Start the run; Compare opens when it has finished."
        return ""
