"""Page: one wizard step. It edits part of the JobSpec and says what is missing before Next."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from concept_eraser.spec.jobspec import JobSpec

from ..state import AppState


class Page(QWidget):
    title = ""
    subtitle = ""
    changed = Signal()  # anything that may change is_complete() or the spec

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.layout_ = QVBoxLayout(self)
        heading = QLabel(f"<h2>{self.title}</h2><p>{self.subtitle}</p>")
        heading.setWordWrap(True)
        self.layout_.addWidget(heading)

    def problem(self) -> str:
        """What blocks Next, as one line the user can act on ("" when the page is complete)."""
        return ""

    def is_complete(self) -> bool:
        return not self.problem()

    def spec_part(self) -> dict[str, Any]:
        """This page's fields of the JobSpec (plain data, merged by the main window)."""
        return {}

    def apply_spec(self, spec: JobSpec) -> None:
        """Show a reopened job file's values."""

    def on_enter(self) -> None:
        """Called when the page becomes current."""
