"""Method step: the methods that fit the loaded model, what each does, and its settings form."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.jobspec import JobSpec
from concept_eraser.spec.registry import MethodCard

from ..state import AppState
from ..widgets.config_form import ConfigFormWidget
from .base import Page


class MethodPage(Page):
    title = "4 · Method"
    subtitle = "How to forget. Only methods that fit the loaded model can be chosen."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        row = QHBoxLayout()
        self.method_list = QListWidget()
        self.method_list.setAccessibleName("Methods")
        self.method_list.setMaximumWidth(300)
        self.method_list.currentItemChanged.connect(self._on_current_changed)
        row.addWidget(self.method_list, 1)
        right = QVBoxLayout()
        self.description = QLabel("Load a model first.")
        self.description.setWordWrap(True)
        self.description.setTextFormat(Qt.TextFormat.RichText)
        self.description.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        right.addWidget(self.description)
        settings = QGroupBox("Settings")
        sl = QVBoxLayout(settings)
        self.form = ConfigFormWidget()
        self.form.changed.connect(self.changed)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        sl.addWidget(scroll)
        seed_form = QFormLayout()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Training seed (separate from the grid seeds); recorded in the job file.")
        seed_form.addRow("Training s&eed:", self.seed)
        sl.addLayout(seed_form)
        right.addWidget(settings, 1)
        row.addLayout(right, 2)
        self.layout_.addLayout(row, 1)
        self.cards: dict[str, MethodCard] = {}
        self._values: dict[str, dict[str, Any]] = {}  # edited settings per method, kept while switching
        state.backend_ready.connect(self._fill)
        state.model_changed.connect(self._fill)

    def _fill(self) -> None:
        self.method_list.blockSignals(True)
        self.method_list.clear()
        self.cards.clear()
        kind = self.state.summary.kind if self.state.summary else None
        first = None
        for card in self.state.offer("methods", default=[]):
            self.cards[card.info.key] = card
            fits = kind is not None and card.fits(kind)
            item = QListWidgetItem(card.info.title + ("" if fits else "  (does not fit)"))
            item.setData(Qt.ItemDataRole.UserRole, card.info.key)
            item.setToolTip(card.info.summary if fits else
                            f"Works on {', '.join(sorted(card.info.model_kinds))} models; this one is {kind}.")
            if not fits:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled & ~Qt.ItemFlag.ItemIsSelectable)
            elif first is None:
                first = item
            self.method_list.addItem(item)
        self.method_list.blockSignals(False)
        if first is not None:
            self.method_list.setCurrentItem(first)
        else:
            self.form.clear()
            if not self.cards and self.state.backend is not None:
                self.description.setText("The engine offers no unlearning methods yet.")
            else:
                self.description.setText("No method fits this model." if kind else "Load a model first.")
        self.changed.emit()

    def current_card(self) -> MethodCard | None:
        item = self.method_list.currentItem()
        if item is None or not (item.flags() & Qt.ItemFlag.ItemIsEnabled):
            return None
        return self.cards.get(item.data(Qt.ItemDataRole.UserRole))

    def select(self, key: str) -> bool:
        for i in range(self.method_list.count()):
            item = self.method_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == key and item.flags() & Qt.ItemFlag.ItemIsEnabled:
                self.method_list.setCurrentItem(item)
                return True
        return False

    def _on_current_changed(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        if previous is not None and self.form.editors:
            self._values[previous.data(Qt.ItemDataRole.UserRole)] = self.form.values()
        card = self.current_card()
        if card is None:
            return
        info = card.info
        needs = [n for n in ("concept", "forget_images", "retain", "anchor") if getattr(info.needs, n)]
        self.description.setText(
            f"<h3>{info.title}</h3><p>{info.summary}</p>"
            f"<p><b>Paper:</b> {info.paper}<br><b>Edits:</b> {', '.join(info.edits)}<br>"
            f"<b>Needs:</b> {', '.join(n.replace('_', ' ') for n in needs) or 'nothing more'}<br>"
            f"<b>Estimate:</b> {card.estimate or 'unknown'}<br>"
            f"<b>Memory:</b> {html.escape(card.memory.demo_text()) or 'unknown'}"
            + (f"<br><b>Full-size models (estimated from parameter counts):</b> {html.escape(card.memory.full_size)}"
               if card.memory.full_size else "") + "</p>")
        self.form.set_schema(card.config_schema, {**card.defaults, **self._values.get(info.key, {})})
        self.changed.emit()

    # wizard ----------------------------------------------------------------------------------------------
    def problem(self) -> str:
        card = self.current_card()
        if card is None:
            return "Choose a method that fits the model."
        draft = self.state.draft()
        if card.info.needs.forget_images and not draft.get("forget_images"):
            return f"{card.info.title} needs example images: add them on the Forget step."
        if card.info.needs.anchor and not draft.get("anchor"):
            return f"{card.info.title} needs an anchor: set it on the Forget step."
        if card.info.needs.retain and not draft.get("retain"):
            return f"{card.info.title} needs retain prompts: add them on the Keep step."
        return ""

    def spec_part(self) -> dict[str, Any]:
        card = self.current_card()
        if card is None:
            return {}
        return {"method": card.info.key, "method_config": self.form.values(), "seed": self.seed.value()}

    def apply_spec(self, spec: JobSpec) -> None:
        self.seed.setValue(spec.seed)
        if spec.method and self.select(spec.method):
            self.form.set_values(spec.method_config)
