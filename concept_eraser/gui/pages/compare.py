"""Compare step: before/after grids with the same seeds, difference and LPIPS overlay, scores, the leak test."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.events import JobResult, MetricReady

from ..state import AppState
from ..widgets.images import MODE_TITLES, MODES, CompareWidget
from .base import Page


def _fmt(value: Any) -> str:
    """Scores as read: 40 (a count), 0.0466, 207.2, 1.2e-05."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


class ComparePage(Page):
    title = "6 · Compare"
    subtitle = "The same seeds before and after. The forgotten rows should change; the rest should not."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        tools = QHBoxLayout()
        self.mode_combo = QComboBox()
        for m in MODES:
            self.mode_combo.addItem(MODE_TITLES[m], m)
        self.mode_combo.setToolTip("Side by side; one grid where a click flips a cell; a before|after slider; "
                                   "or the pixel difference.")
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self.zoom_slider = QSlider(Qt.Orientation.Horizontal)
        self.zoom_slider.setRange(32, 256)
        self.zoom_slider.setValue(72)
        self.zoom_slider.setAccessibleName("Zoom")
        self.zoom_slider.setToolTip("Cell size in pixels.")
        self.zoom_slider.valueChanged.connect(lambda v: self.compare.set_zoom(v))
        self.heat_check = QCheckBox("LPIPS &heat overlay")
        self.heat_check.setToolTip("Colour each after cell by its LPIPS distance to the before cell (red = changed).")
        self.heat_check.toggled.connect(self._on_heat_toggled)
        mode_label = QLabel("&View:")
        mode_label.setBuddy(self.mode_combo)
        zoom_label = QLabel("&Zoom:")
        zoom_label.setBuddy(self.zoom_slider)
        for w in (mode_label, self.mode_combo, zoom_label, self.zoom_slider, self.heat_check):
            tools.addWidget(w)
        tools.addStretch(1)
        self.layout_.addLayout(tools)
        row = QHBoxLayout()
        self.compare = CompareWidget()
        self.compare.zoom_requested.connect(self.zoom_slider.setValue)
        self.scroll = scroll = QScrollArea()
        scroll.setWidget(self.compare)
        scroll.setWidgetResizable(False)
        scroll.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        row.addWidget(scroll, 3)
        side = QVBoxLayout()
        scores_box = QGroupBox("Scores")
        sl = QVBoxLayout(scores_box)
        self.score_table = QTableWidget(0, 2)
        self.score_table.setHorizontalHeaderLabels(["Score", "Value"])
        self.score_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.score_table.verticalHeader().setVisible(False)
        self.score_table.setAccessibleName("Scores")
        self.score_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        sl.addWidget(self.score_table)
        side.addWidget(scores_box, 1)
        leak_box = QGroupBox("Leak test")
        ll = QVBoxLayout(leak_box)
        self.leak_button = QPushButton("Run &leak test")
        self.leak_button.setToolTip("Probe the edited model with rephrasings of the concept and count what comes back.")
        self.leak_button.clicked.connect(self.run_leak_test)
        ll.addWidget(self.leak_button)
        self.leak_table = QTableWidget(0, 3)
        self.leak_table.setHorizontalHeaderLabels(["Probe", "Recognised", "Leaked"])
        self.leak_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.leak_table.verticalHeader().setVisible(False)
        self.leak_table.setAccessibleName("Leak test results")
        self.leak_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        ll.addWidget(self.leak_table)
        self.leak_status = QLabel("")
        self.leak_status.setWordWrap(True)
        ll.addWidget(self.leak_status)
        side.addWidget(leak_box, 1)
        row.addLayout(side, 2)
        self.layout_.addLayout(row, 1)
        self.report: dict[str, Any] | None = None
        self.leak_options: dict[str, Any] = {}  # extra leak-test options (e.g. attack_steps) for evaluate()
        state.outcome_changed.connect(self._on_outcome)
        state.runner.event.connect(self._on_event)
        state.runner.done.connect(self._on_done)
        self._on_outcome()

    def _metric_titles(self) -> dict[str, str]:
        titles = {m.key: m.title for m in self.state.offer("metrics", default=[])}
        for m in self.state.offer("metrics", default=[]):  # the unlearn job's scores: lpips_retain, ssim_distance_retain
            titles.setdefault(m.key.replace("-", "_") + "_retain", f"{m.title} (retain rows)")
        return titles

    def _on_outcome(self) -> None:
        out = self.state.outcome
        self.compare.set_grids(out.before if out else None, out.after if out else None)
        self.fit()
        keys = sorted(self.state.per_cell, key=lambda k: "lpips" not in k)  # LPIPS first, else any per-cell score
        heat = self.state.per_cell[keys[0]] if keys else None
        self.compare.set_heat(heat)
        self.heat_check.setEnabled(heat is not None)
        # Named after what it shows: without the LPIPS weights the engine gives only the SSIM distance.
        title = self._metric_titles().get(keys[0], keys[0]) if keys else "LPIPS"
        self.heat_key = keys[0] if keys else None
        self.heat_check.setText(f"{title} &heat overlay")
        self.heat_check.setToolTip(f"Colour each after cell by its {title} to the same-seed before cell (red = changed; "
                                   "cells without a value stay clear).")
        self.leak_button.setEnabled(out is not None)
        self.leak_table.setRowCount(0)
        self.leak_status.setText("")
        self.set_scores(out.scores if out else {})

    def _on_mode_changed(self, _index: int) -> None:
        self.compare.set_mode(self.mode_combo.currentData())
        self.fit()

    def fit(self) -> None:
        """Zoom so that the side-by-side grids fit the visible area (at least 32 px cells)."""
        vp = self.scroll.viewport().size()
        if vp.width() > 100 and self.compare.after is not None:
            self.zoom_slider.setValue(self.compare.fit_zoom(vp.width(), max(vp.height(), 300)))

    def on_enter(self) -> None:
        self.fit()

    def set_scores(self, scores: dict[str, float]) -> None:
        titles = self._metric_titles()
        self.score_table.setRowCount(len(scores))
        for i, (key, value) in enumerate(scores.items()):
            name = QTableWidgetItem(titles.get(key, key))
            name.setToolTip(key)
            self.score_table.setItem(i, 0, name)
            self.score_table.setItem(i, 1, QTableWidgetItem(_fmt(value)))

    def _on_heat_toggled(self, on: bool) -> None:
        self.compare.show_heat = on
        self.compare.update()

    def run_leak_test(self) -> bool:
        if self.state.backend is None or not self.state.run_dir:
            return False
        ctx = self.state.new_context()
        options = {"samples": self.state.eval_samples(), **self.leak_options}
        if not self.state.runner.start("evaluate", self.state.backend.evaluate(self.state.run_dir, ctx, leaks=True,
                                                                               options=options), ctx.cancel):
            return False
        self.leak_status.setText("Running the leak test…")
        self.leak_button.setEnabled(False)
        return True

    def _on_event(self, name: str, event: Any) -> None:
        if name == "evaluate" and isinstance(event, MetricReady) and event.per_cell is not None:
            self.state.per_cell[event.key] = event.per_cell

    def _on_done(self, name: str, result: JobResult) -> None:
        if name != "evaluate":
            return
        self.leak_button.setEnabled(self.state.outcome is not None)
        if not result.ok:
            self.leak_status.setText(f"Leak test {result.status}: {result.error or ''}")
            return
        self.report = result.value
        leaks = result.value.get("leaks", [])
        self.leak_table.setRowCount(len(leaks))
        for i, row in enumerate(leaks):
            probe = QTableWidgetItem(str(row.get("probe", "")))
            probe.setToolTip(probe.text())
            self.leak_table.setItem(i, 0, probe)
            self.leak_table.setItem(i, 1, QTableWidgetItem(f"{float(row.get('recognised', 0)):.0%}"))
            self.leak_table.setItem(i, 2, QTableWidgetItem("yes" if row.get("leaked") else "no"))
        n = sum(bool(r.get("leaked")) for r in leaks)
        self.leak_status.setText(f"{n} of {len(leaks)} probes brought the concept back." if leaks else "No leak probes.")
        if result.value.get("scores"):
            self.set_scores({**(self.state.outcome.scores if self.state.outcome else {}), **result.value["scores"]})
