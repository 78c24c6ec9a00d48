"""MainWindow: step sidebar, the pages, Back/Next, menus, status line, persisted geometry and settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.events import JobResult
from concept_eraser.spec.jobspec import JobSpec, ModelSource, load_job, parse_job, save_job
from concept_eraser.spec.runloop import UserError

from .pages import PAGE_CLASSES
from .pages.base import Page
from .runner import JobRunner
from .state import AppState, make_settings

STARTED_MESSAGES = {"load": "Loading the model…", "unlearn": "Running the method…",
                    "evaluate": "Running the leak test…", "export": "Exporting…"}
DONE_MESSAGES = {"load": "Model loaded.", "unlearn": "Run finished: compare the grids.",
                 "evaluate": "Leak test finished.", "export": "Export written and verified."}


class SettingsDialog(QDialog):
    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.state = state
        form = QFormLayout(self)
        self.runs_edit = QLineEdit(str(state.runs_dir()))
        self.runs_edit.setToolTip("Every run writes its job file, grids, scores and checkpoints in a folder here.")
        self.preview_spin = QSpinBox()
        self.preview_spin.setRange(1, 10000)
        self.preview_spin.setValue(int(state.settings.value("preview_every", 10)))
        self.preview_spin.setToolTip("Show a preview every this many steps (and at step 0).")
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(0, 1000)
        self.samples_spin.setValue(state.eval_samples())
        self.samples_spin.setToolTip("Demo models: images per grid row that the shipped judge scores after a run "
                                     "(0 = no judged scores; fewer is faster, more is steadier).")
        form.addRow("&Runs folder:", self.runs_edit)
        form.addRow("&Preview every (steps):", self.preview_spin)
        form.addRow("&Judged samples per row:", self.samples_spin)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def accept(self) -> None:
        self.state.settings.setValue("runs_dir", self.runs_edit.text().strip())
        self.state.settings.setValue("preview_every", self.preview_spin.value())
        self.state.settings.setValue("eval_samples", self.samples_spin.value())
        super().accept()


class MainWindow(QMainWindow):
    def __init__(self, settings=None, backend_label: str = "") -> None:
        super().__init__()
        self.setWindowTitle("concept_eraser")
        self.runner = JobRunner(self)
        self.state = AppState(self.runner, settings or make_settings(), self)
        self.backend_label = backend_label
        self.pages: list[Page] = [cls(self.state) for cls in PAGE_CLASSES]
        self.state.draft = self.draft
        self.state.build_spec = self.build_spec
        self.state.concept_rows = self.pages[1].concept_rows
        self._pending_spec: JobSpec | None = None
        self.last_message = ""
        self.ask = self._ask  # replaced in tests

        central = QWidget()
        outer = QHBoxLayout(central)
        self.sidebar = QListWidget()
        self.sidebar.setAccessibleName("Steps")
        self.sidebar.setFixedWidth(170)
        for page in self.pages:
            self.sidebar.addItem(QListWidgetItem(page.title))
        self.sidebar.currentRowChanged.connect(self._on_sidebar_row)
        outer.addWidget(self.sidebar)
        right = QVBoxLayout()
        self.stack = QStackedWidget()
        for page in self.pages:
            self.stack.addWidget(page)
            page.changed.connect(self._update_nav)
        right.addWidget(self.stack, 1)
        nav = QHBoxLayout()
        self.problem_label = QLabel("")
        self.problem_label.setWordWrap(True)
        self.back_button = QPushButton("< &Back")
        self.back_button.setShortcut(QKeySequence("Alt+Left"))
        self.back_button.clicked.connect(lambda: self.go(self.stack.currentIndex() - 1))
        self.next_button = QPushButton("&Next >")
        self.next_button.setShortcut(QKeySequence("Alt+Right"))
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(lambda: self.go(self.stack.currentIndex() + 1))
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00020")
        self.error_label.setWordWrap(True)
        self.copy_details_button = QPushButton("Copy &details")
        self.copy_details_button.setToolTip("Copy the failed job's full traceback to the clipboard.")
        self.copy_details_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.error_details))
        self.error_details = ""
        self.error_label.setVisible(False)
        self.copy_details_button.setVisible(False)
        nav.addWidget(self.error_label, 2)
        nav.addWidget(self.copy_details_button)
        nav.addWidget(self.problem_label, 1)
        nav.addWidget(self.back_button)
        nav.addWidget(self.next_button)
        right.addLayout(nav)
        outer.addLayout(right, 1)
        self.setCentralWidget(central)
        self.status_label = QLabel("Loading PyTorch in the background…")
        self.statusBar().addWidget(self.status_label, 1)
        self._make_menus()

        self.runner.done.connect(self._on_job_done)
        self.runner.refused.connect(self.show_message)
        self.runner.started.connect(self._on_job_started)
        self.state.model_changed.connect(self._on_model_changed)
        self.state.outcome_changed.connect(self._update_nav)
        self.state.backend_ready.connect(self._update_nav)
        geometry = self.state.settings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        self.sidebar.setCurrentRow(0)
        self._update_nav()

    # menus -----------------------------------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcut: str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _make_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(file_menu, "Open model &folder…", self.pages[0].open_folder, "Ctrl+O")
        self._action(file_menu, "Open model f&ile…", self.pages[0].open_file, "Ctrl+Shift+O")
        file_menu.addSeparator()
        self._action(file_menu, "Open &job file…", self.open_job_dialog, "Ctrl+J")
        self._action(file_menu, "&Save job file…", self.save_job_dialog, "Ctrl+S")
        self.recent_menu = file_menu.addMenu("&Recent runs")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file_menu.addSeparator()
        self._action(file_menu, "Se&ttings…", lambda: SettingsDialog(self.state, self).exec(), "Ctrl+,")
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q")
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About concept_eraser", self.about)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        runs = self.state.recent_runs()
        if not runs:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        for run in runs:
            self._action(self.recent_menu, run, lambda _=False, r=run: self.open_job(Path(r) / "job.json"))

    def about(self) -> None:
        QMessageBox.about(self, "About concept_eraser",
                          "<b>concept_eraser</b><br>Make a local diffusion model forget a concept, compare the same "
                          "seeds before and after, and export the result. Everything runs offline.")

    # backend ---------------------------------------------------------------------------------------------
    def start_backend(self, job) -> None:
        """Run the warm-up job (it imports torch on the worker thread and returns the backend)."""
        self.status_label.setText("Loading PyTorch in the background…")
        self.runner.start("backend", job)

    def load_when_ready(self, model: str) -> None:
        """Load `model` (a demo name, a folder or a file) as soon as the engine is ready (`--model`)."""
        path = Path(model).expanduser()
        self.pages[0].load(ModelSource(path=str(path.resolve()) if path.exists() else model))

    def _on_job_started(self, name: str) -> None:
        if name != "backend":
            self.status_label.setText(STARTED_MESSAGES.get(name, f"Running {name}…"))
        self._update_nav()

    def _on_job_done(self, name: str, result: JobResult) -> None:
        failed = result.status == "failed" and name != "unlearn"  # the Run page shows its own error row
        self.error_details = (result.details or result.error or "") if failed else ""
        self.error_label.setText(f"{name} failed: {result.error}" if failed else "")
        self.error_label.setVisible(failed)
        self.copy_details_button.setVisible(failed and bool(result.details))
        if name == "backend":
            if result.ok:
                self.status_label.setText("Ready" + (f" ({self.backend_label})" if self.backend_label else "") + ".")
                self.state.set_backend(result.value)
            else:
                self.status_label.setText(f"Could not start the engine: {result.error}")
        elif not result.ok and result.error:
            self.status_label.setText(f"{name} {result.status}: {result.error}")
        elif result.ok:
            self.status_label.setText(DONE_MESSAGES.get(name, f"{name} finished."))
        self._update_nav()

    def show_message(self, text: str) -> None:
        self.last_message = text
        self.statusBar().showMessage(text, 8000)

    # navigation ------------------------------------------------------------------------------------------
    def reachable(self, index: int) -> bool:
        return all(p.is_complete() for p in self.pages[:index])

    def go(self, index: int) -> bool:
        if not 0 <= index < len(self.pages) or not self.reachable(index):
            return False
        self.sidebar.setCurrentRow(index)
        return True

    def _on_sidebar_row(self, row: int) -> None:
        if row < 0:
            return
        if not self.reachable(row):
            self.sidebar.setCurrentRow(self.stack.currentIndex())
            return
        self.stack.setCurrentIndex(row)
        self.pages[row].on_enter()
        self._update_nav()

    def _update_nav(self) -> None:
        i = self.stack.currentIndex()
        if not self.reachable(i):  # e.g. another model was loaded: back to the first step that needs input
            first_open = next(j for j in range(len(self.pages)) if not self.pages[j].is_complete())
            self.sidebar.setCurrentRow(first_open)
            return
        page = self.pages[i]
        ok = True
        for j, p in enumerate(self.pages):
            item = self.sidebar.item(j)
            flags = item.flags()
            item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled if ok else flags & ~Qt.ItemFlag.ItemIsEnabled)
            ok = ok and p.is_complete()
        problem = page.problem()
        self.problem_label.setText(problem)
        self.back_button.setEnabled(i > 0)
        self.next_button.setEnabled(i < len(self.pages) - 1 and not problem)

    # job files -------------------------------------------------------------------------------------------
    def draft(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for page in self.pages:
            data.update(page.spec_part())
        return data

    def build_spec(self) -> JobSpec:
        data = self.draft()
        if "model" not in data:
            raise UserError("load a model first")
        return parse_job(data)

    def save_job(self, path: str | Path) -> Path | None:
        try:
            out = save_job(self.build_spec(), path)
        except UserError as exc:
            self.show_message(f"Cannot save the job yet: {exc}")
            return None
        self.show_message(f"Saved {out}")
        return out

    def open_job(self, path: str | Path) -> JobSpec | None:
        try:
            spec = load_job(path)
        except UserError as exc:
            self.show_message(str(exc))
            return None
        self._pending_spec = spec
        self.pages[4].offer_resume(str(Path(path).parent))  # a run folder with a checkpoint can be resumed
        self.pages[0].apply_spec(spec)  # loads the model; the rest follows in _on_model_changed
        self.show_message(f"Opened {Path(path).name}; loading {spec.model.path}…")
        return spec

    def _on_model_changed(self) -> None:
        spec, self._pending_spec = self._pending_spec, None
        if spec is not None and self.state.summary is not None:
            for page in self.pages[1:]:
                page.apply_spec(spec)
        self._update_nav()

    def open_job_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a job file", "", "Job files (*.json *.toml)")
        if path:
            self.open_job(path)

    def save_job_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the job file", "job.json", "Job files (*.json *.toml)")
        if path:
            self.save_job(path)

    # closing ---------------------------------------------------------------------------------------------
    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.runner.busy and self.runner.current != "backend":
            if not self.ask("A job is running", f"'{self.runner.current}' is still running. Cancel it and quit?"):
                event.ignore()
                return
            self.status_label.setText("Cancelling…")
            self.runner.cancel()
        if self.runner.busy:
            self.runner.wait_done(60.0)
        self.state.settings.setValue("geometry", self.saveGeometry())
        self.state.settings.sync()
        event.accept()

