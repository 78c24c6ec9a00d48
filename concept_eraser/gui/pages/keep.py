"""Keep step: what must stay (retain prompts or classes, with presets) and the same-seed comparison grid."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.jobspec import SCHEDULERS, JobSpec, SampleRow

from ..state import AppState
from .base import Page

GENERIC_TEXT_PRESETS = {"Everyday scenes": ["a photo of a dog", "a city street at night", "a bowl of fruit"]}


class KeepPage(Page):
    title = "3 · Keep"
    subtitle = "What must the model still do well? These rows and seeds make the before/after grid."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        row = QHBoxLayout()
        box = QGroupBox("Retain prompts")
        bl = QVBoxLayout(box)
        add_row = QHBoxLayout()
        self.retain_edit = QLineEdit()
        self.retain_edit.setToolTip("A prompt (or, for class models, a class number) that must keep working; Enter adds.")
        self.retain_edit.returnPressed.connect(self.add_from_edit)
        self.add_button = QPushButton("&Add")
        self.add_button.clicked.connect(self.add_from_edit)
        add_row.addWidget(self.retain_edit, 1)
        add_row.addWidget(self.add_button)
        bl.addLayout(add_row)
        self.input_error = QLabel("")
        self.input_error.setStyleSheet("color: #b00020")
        bl.addWidget(self.input_error)
        self.retain_list = QListWidget()
        self.retain_list.setAccessibleName("Retain prompts")
        self.retain_list.setToolTip("Double-click a prompt to edit it.")
        self.retain_list.itemChanged.connect(lambda _i: self.changed.emit())
        bl.addWidget(self.retain_list, 1)
        preset_row = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Ready-made retain sets for the loaded model.")
        self.apply_preset_button = QPushButton("Use &preset")
        self.apply_preset_button.clicked.connect(self.apply_preset)
        self.remove_button = QPushButton("&Remove")
        self.remove_button.clicked.connect(self.remove_selected)
        preset_row.addWidget(self.preset_combo, 1)
        preset_row.addWidget(self.apply_preset_button)
        preset_row.addWidget(self.remove_button)
        bl.addLayout(preset_row)
        row.addWidget(box, 3)

        grid_box = QGroupBox("Comparison grid")
        form = QFormLayout(grid_box)
        self.first_seed = QSpinBox()
        self.first_seed.setRange(0, 2**31 - 1)
        self.first_seed.setToolTip("Grid seeds are first, first+1, …; before and after use the same ones.")
        self.seed_count = QSpinBox()
        self.seed_count.setRange(1, 16)
        self.seed_count.setValue(4)
        self.seed_count.setToolTip("Columns of the grid: one image per seed.")
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(30)
        self.steps.setToolTip("Denoising steps per image.")
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setToolTip("Classifier-free guidance (1 = none).")
        self.scheduler = QComboBox()
        self.scheduler.addItems(list(SCHEDULERS))
        self.scheduler.setToolTip("Sampler; the same for before and after.")
        self.size_label = QLabel()
        form.addRow("&First seed:", self.first_seed)
        form.addRow("&Seeds (columns):", self.seed_count)
        form.addRow("S&teps:", self.steps)
        form.addRow("&Guidance:", self.guidance)
        form.addRow("Sc&heduler:", self.scheduler)
        form.addRow("Grid:", self.size_label)
        for w in (self.first_seed, self.seed_count, self.steps):
            w.valueChanged.connect(lambda _v: self.changed.emit())
        for w in (self.first_seed, self.seed_count):
            w.valueChanged.connect(self._drop_custom_seeds)
        self.custom_seeds: list[int] | None = None  # seeds from a job file that are not first, first+1, ...
        self.sampling_extra: dict[str, Any] = {}  # job-file sampling fields this page has no editor for, kept as read
        self.guidance.valueChanged.connect(lambda _v: self.changed.emit())
        row.addWidget(grid_box, 2)
        self.layout_.addLayout(row, 1)
        self.changed.connect(self._update_size)
        state.model_changed.connect(self._on_model_changed)

    # model -----------------------------------------------------------------------------------------------
    def _presets(self) -> dict[str, list[str]]:
        s = self.state.summary
        if s is None:
            return {}
        demo = None
        if s.name:
            demo = next((d for d in self.state.offer("demo_models", default=[]) if d.name == s.name), None)
        presets = dict((demo.extra or {}).get("retain_presets", {})) if demo else {}
        if s.conditioning == "class" and [] not in presets.values():
            presets["All other classes"] = []
        elif s.conditioning == "text" and not presets:
            presets = dict(GENERIC_TEXT_PRESETS)
        return presets

    def _on_model_changed(self) -> None:
        s = self.state.summary
        self.custom_seeds, self.sampling_extra = None, {}
        self.retain_list.clear()
        self.preset_combo.clear()
        if s is None:
            return
        self.preset_combo.addItems(list(self._presets()))
        self.steps.setValue(s.default_steps)
        self.guidance.setValue(s.default_guidance)
        self.retain_edit.setPlaceholderText({"class": f"a class number, 0–{(s.num_classes or 1) - 1}",
                                             "text": "e.g. a red square", "none": "unconditional"}[s.conditioning])
        self.changed.emit()

    # editing ---------------------------------------------------------------------------------------------
    def _row_from_text(self, text: str) -> SampleRow | None:
        s = self.state.summary
        text = text.strip()
        if not text:
            return None
        if s is not None and s.conditioning == "class":
            row = SampleRow.parse(text)
            if row.prompt is not None or (row.label is not None and row.label >= (s.num_classes or 0)):
                self.input_error.setText(f"'{text}' is not a class of this model (0–{(s.num_classes or 1) - 1})")
                return None
            return row
        return SampleRow(prompt=text)

    def add_row(self, row: SampleRow) -> None:
        if row in self.rows():
            return
        names = self.state.summary.class_names if self.state.summary else None
        if names and all(n == str(i) for i, n in enumerate(names)):
            names = None  # "class 3", not "class 3 (3)"
        item = QListWidgetItem(row.describe(names))
        item.setData(Qt.ItemDataRole.UserRole, row.model_dump())
        if row.prompt is not None:
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.retain_list.addItem(item)
        self.changed.emit()

    def add_from_edit(self) -> None:
        self.input_error.setText("")
        row = self._row_from_text(self.retain_edit.text())
        if row is not None:
            self.add_row(row)
            self.retain_edit.clear()

    def remove_selected(self) -> None:
        for item in self.retain_list.selectedItems():
            self.retain_list.takeItem(self.retain_list.row(item))
        self.changed.emit()

    def apply_preset(self, name: str | None = None) -> None:
        name = name or self.preset_combo.currentText()
        prompts = self._presets().get(name)
        if prompts is None:
            return
        s = self.state.summary
        if s is not None and s.conditioning == "class" and not prompts:
            forgotten = {r.get("label") for r in self.state.concept_rows()}
            for label in range(s.num_classes or 0):
                if label not in forgotten:
                    self.add_row(SampleRow(label=label))
        for p in prompts:
            self.add_row(SampleRow(prompt=p) if not str(p).isdigit() else SampleRow(label=int(p)))

    def rows(self) -> list[SampleRow]:
        out = []
        for i in range(self.retain_list.count()):
            item = self.retain_list.item(i)
            data = dict(item.data(Qt.ItemDataRole.UserRole))
            if data.get("prompt") is not None:
                data["prompt"] = item.text().strip() or data["prompt"]
            out.append(SampleRow(**data))
        return out

    def _drop_custom_seeds(self, _value: int = 0) -> None:
        if not getattr(self, "_applying", False):
            self.custom_seeds = None

    def seeds(self) -> list[int]:
        if self.custom_seeds:
            return list(self.custom_seeds)
        return list(range(self.first_seed.value(), self.first_seed.value() + self.seed_count.value()))

    def _update_size(self) -> None:
        n_rows = len(self.state.concept_rows()) + len(self.rows())
        n_seeds = len(self.seeds())
        custom = f" (seeds {', '.join(map(str, self.custom_seeds))} from the job file)" if self.custom_seeds else ""
        self.size_label.setText(f"{n_rows} rows × {n_seeds} seeds = {n_rows * n_seeds} images, before and after{custom}")

    # wizard ----------------------------------------------------------------------------------------------
    def problem(self) -> str:
        if self.state.summary is not None and self.state.summary.conditioning != "none" and not self.rows():
            return "Add at least one retain prompt (or use a preset): it shows what the edit must not break."
        return ""

    def spec_part(self) -> dict[str, Any]:
        concept_rows = self.state.concept_rows()
        rows = concept_rows + [r.model_dump(exclude_none=True) for r in self.rows()]
        if not rows:
            rows = [{}]  # unconditional model: one unconditional row
        return {"retain": [r.model_dump(exclude_none=True) for r in self.rows()],
                "sampling": {"rows": rows, "seeds": self.seeds(), "scheduler": self.scheduler.currentText(),
                             "steps": self.steps.value(), "guidance": self.guidance.value(), **self.sampling_extra}}

    def apply_spec(self, spec: JobSpec) -> None:
        self.retain_list.clear()
        for row in spec.retain:
            self.add_row(row)
        if spec.sampling is not None:
            seeds = spec.sampling.seeds
            self._applying = True
            self.first_seed.setValue(seeds[0])
            self.seed_count.setValue(min(len(seeds), self.seed_count.maximum()))
            self._applying = False
            consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
            self.custom_seeds = None if consecutive and len(seeds) <= self.seed_count.maximum() else list(seeds)
            self.steps.setValue(spec.sampling.steps)
            if spec.sampling.guidance is not None:
                self.guidance.setValue(spec.sampling.guidance)
            self.scheduler.setCurrentText(spec.sampling.scheduler)
            self.sampling_extra = spec.sampling.model_dump(include={"height", "width", "negative_prompt", "batch_size"})
            self._update_size()
