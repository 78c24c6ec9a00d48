"""Export step: write the edited model in a chosen format, then show the verification result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from concept_eraser.spec.events import JobResult, Progress, StageStarted
from concept_eraser.spec.registry import ExportFormat

from ..state import AppState
from .base import Page

SUFFIX = {"single-file": ".safetensors", "delta": "-delta.safetensors", "lora": "-lora.safetensors", "diffusers": ""}


def verified(report: dict[str, Any]) -> bool:
    """The fake backend says value["reloaded"]; the engine's export says value["verify"]["pass"]."""
    verify = report.get("verify")
    return bool(report.get("reloaded") or (isinstance(verify, dict) and verify.get("pass")))


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


class ExportPage(Page):
    title = "7 · Export"
    subtitle = "Save the edited model. The file is reloaded and checked against the run's after grid."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        box = QGroupBox("Export")
        form = QFormLayout(box)
        self.format_combo = QComboBox()
        self.format_combo.setToolTip("The file layout to write.")
        self.format_combo.currentIndexChanged.connect(self._on_format_changed)
        self.format_help = QLabel("")
        self.format_help.setWordWrap(True)
        self.rank_spin = QSpinBox()
        self.rank_spin.setRange(1, 1024)
        self.rank_spin.setToolTip("LoRA rank: higher keeps more of the edit, in a bigger file.")
        self.rank_label = QLabel("&Rank:")
        self.rank_label.setBuddy(self.rank_spin)
        dest = QHBoxLayout()
        self.dest_edit = QLineEdit()
        self.dest_edit.setToolTip("Where to write; an existing file or folder is replaced only after the export verified.")
        self.dest_edit.textChanged.connect(lambda _t: self.changed.emit())
        self.browse_button = QPushButton("&Browse…")
        self.browse_button.clicked.connect(self.browse)
        dest.addWidget(self.dest_edit, 1)
        dest.addWidget(self.browse_button)
        self.export_button = QPushButton("&Export")
        self.export_button.setToolTip("Write the model, reload it and compare it with the run's after grid.")
        self.export_button.clicked.connect(self.export)
        self.progress_bar = QProgressBar()
        self.result_label = QLabel("")
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.setWordWrap(True)
        fmt_label = QLabel("&Format:")
        fmt_label.setBuddy(self.format_combo)
        form.addRow(fmt_label, self.format_combo)
        form.addRow("", self.format_help)
        form.addRow(self.rank_label, self.rank_spin)
        dest_label = QLabel("&Destination:")
        dest_label.setBuddy(self.dest_edit)
        form.addRow(dest_label, dest)
        export_row = QHBoxLayout()
        export_row.addWidget(self.export_button)
        export_row.addStretch(1)
        form.addRow("", export_row)
        form.addRow("Progress:", self.progress_bar)
        form.addRow("Result:", self.result_label)
        self.layout_.addWidget(box)
        self.layout_.addStretch(1)
        self.formats: list[ExportFormat] = []
        self.verification: dict[str, Any] | None = None
        state.outcome_changed.connect(self._fill)
        state.model_changed.connect(self._fill)
        state.runner.event.connect(self._on_event)
        state.runner.done.connect(self._on_done)
        self._fill()

    def _fill(self) -> None:
        self.format_combo.clear()
        s = self.state.summary
        self.formats = self.state.offer("export_formats", s, default=[]) if s else []
        for f in self.formats:
            self.format_combo.addItem(f.title, f.key)
        self.export_button.setEnabled(self.state.outcome is not None)
        self.result_label.setText("" if self.state.outcome else "Finish a run first.")

    def current_format(self) -> ExportFormat | None:
        i = self.format_combo.currentIndex()
        return self.formats[i] if 0 <= i < len(self.formats) else None

    def _on_format_changed(self, _i: int) -> None:
        fmt = self.current_format()
        self.format_help.setText(fmt.description if fmt else "")
        has_rank = bool(fmt and "rank" in fmt.options)
        self.rank_spin.setVisible(has_rank)
        self.rank_label.setVisible(has_rank)
        if has_rank:
            self.rank_spin.setValue(int(fmt.options["rank"]))
        if fmt and self.state.run_dir:
            name = (self.state.summary.name if self.state.summary and self.state.summary.name else "model") + "-erased"
            self.dest_edit.setText(str(Path(self.state.run_dir) / "export" / (name + SUFFIX.get(fmt.key, ""))))

    def browse(self) -> None:
        fmt = self.current_format()
        if fmt and fmt.key == "diffusers":
            path = QFileDialog.getExistingDirectory(self, "Export to folder")
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Export to file", self.dest_edit.text(), "safetensors (*.safetensors)")
        if path:
            self.dest_edit.setText(path)

    def options(self) -> dict[str, Any]:
        fmt = self.current_format()
        return {"rank": self.rank_spin.value()} if fmt and "rank" in fmt.options else {}

    def export(self) -> bool:
        fmt, out = self.current_format(), self.dest_edit.text().strip()
        if fmt is None or not out or not self.state.run_dir or self.state.backend is None:
            self.result_label.setText("Choose a format and a destination first.")
            return False
        ctx = self.state.new_context()
        job = self.state.backend.export(self.state.run_dir, fmt.key, out, ctx, self.options())
        if not self.state.runner.start("export", job, ctx.cancel):
            return False
        self.result_label.setText(f"Exporting to {out}…")
        self.export_button.setEnabled(False)
        return True

    def _on_event(self, name: str, event: Any) -> None:
        if name != "export":
            return
        if isinstance(event, StageStarted):
            self.progress_bar.setRange(0, event.total or 0)
        elif isinstance(event, Progress):
            self.progress_bar.setValue(event.step)

    def _on_done(self, name: str, result: JobResult) -> None:
        if name != "export":
            return
        self.export_button.setEnabled(self.state.outcome is not None)
        self.progress_bar.setRange(0, 1)  # not left busy (an export without a step count sets 0..0)
        self.progress_bar.setValue(1 if result.ok else 0)
        if result.ok:
            self.verification = dict(result.value or {})
            v = self.verification
            self.result_label.setText(("✔ Verified" if verified(v) else "✘ Not verified") + "\n"
                                      + "\n".join(f"{k.replace('_', ' ')}: {_text(val)}" for k, val in v.items()))
        else:
            self.result_label.setText(f"Export {result.status}: {result.error or ''}")

    def problem(self) -> str:
        return ""
