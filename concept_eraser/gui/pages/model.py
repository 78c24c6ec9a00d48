"""Model step: pick a bundled demo model or open a folder / single file; load it; show its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from concept_eraser.spec.events import JobResult, Progress
from concept_eraser.spec.jobspec import DeviceSpec, JobSpec, ModelSource

from ..state import AppState
from .base import Page

MODEL_SUFFIXES = (".safetensors", ".ckpt")
MODEL_KINDS = ("ddpm", "ddpm-cond", "sd", "sdxl")


def _human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return str(n)


class ModelPage(Page):
    title = "1 · Model"
    subtitle = "Choose the diffusion model to edit. Your files are never changed: edits happen on a loaded copy."

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        self.setAcceptDrops(True)
        row = QHBoxLayout()
        left = QGroupBox("Bundled demo models")
        lv = QFormLayout(left)
        self.demo_list = QListWidget()
        self.demo_list.setAccessibleName("Demo models")
        self.demo_list.setToolTip("Small models shipped with concept_eraser; double-click or press Enter to load.")
        self.demo_list.itemActivated.connect(self._on_demo_activated)
        self.demo_list.itemClicked.connect(self._on_demo_activated)
        lv.addRow(self.demo_list)
        self.demo_help = QLabel("")
        self.demo_help.setWordWrap(True)
        lv.addRow(self.demo_help)
        self.demo_list.currentItemChanged.connect(
            lambda item, _prev: self.demo_help.setText(item.toolTip() if item is not None else ""))
        buttons = QHBoxLayout()
        self.open_folder_button = QPushButton("Open &folder…")
        self.open_folder_button.setToolTip("A diffusers model folder (with model_index.json or a UNet config).")
        self.open_folder_button.clicked.connect(self.open_folder)
        self.open_file_button = QPushButton("Open f&ile…")
        self.open_file_button.setToolTip("A single .safetensors (or .ckpt) checkpoint.")
        self.open_file_button.clicked.connect(self.open_file)
        buttons.addWidget(self.open_folder_button)
        buttons.addWidget(self.open_file_button)
        lv.addRow(buttons)
        hint = QLabel("…or drop a model folder or file anywhere on this page.")
        hint.setEnabled(False)
        lv.addRow(hint)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_combo.setToolTip("Where the model runs; auto picks a GPU when there is one.")
        self.dtype_combo = QComboBox()
        self.dtype_combo.addItems(["auto", "float32", "float16", "bfloat16"])
        self.dtype_combo.setToolTip("Precision; auto is float32 on CPU (bf16 is much slower on most CPUs).")
        lv.addRow("&Device:", self.device_combo)
        lv.addRow("&Precision:", self.dtype_combo)
        row.addWidget(left, 1)

        right = QGroupBox("Loaded model")
        self.summary_form = QFormLayout(right)
        self.status_label = QLabel("Loading PyTorch in the background…")
        self.status_label.setWordWrap(True)
        self.summary_form.addRow(self.status_label)
        self.fields: dict[str, QLabel] = {}
        for key, title in (("name", "Name"), ("kind", "Kind"), ("architecture", "Architecture"), ("size", "Size"),
                           ("conditioning", "Conditioning"), ("sha256", "sha256"), ("source", "Source")):
            label = QLabel("—")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            self.fields[key] = label
            self.summary_form.addRow(f"{title}:", label)
        row.addWidget(right, 1)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)
        self._pending: ModelSource | None = None
        state.backend_ready.connect(self._on_backend_ready)
        state.model_changed.connect(self._update_summary)
        state.runner.event.connect(self._on_job_event)
        state.runner.done.connect(self._on_job_done)
        self._set_enabled(False)

    # backend ---------------------------------------------------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        for w in (self.demo_list, self.open_folder_button, self.open_file_button):
            w.setEnabled(on)

    def _on_backend_ready(self) -> None:
        self.demo_list.clear()
        for demo in self.state.offer("demo_models", default=[]):
            if demo.kind not in MODEL_KINDS:  # the catalog also lists judges
                continue
            item = QListWidgetItem(f"{demo.title}  ({demo.kind})" + ("" if demo.available else " — not built"))
            item.setData(Qt.ItemDataRole.UserRole, demo.name)
            item.setToolTip(demo.description + ("" if demo.available else "\nBuild it first: concept-eraser demo build"))
            if not demo.available:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.demo_list.addItem(item)
        self._set_enabled(True)
        self.status_label.setText("Choose a model.")
        if self._pending is not None:
            source, self._pending = self._pending, None
            self.load(source)

    # loading ---------------------------------------------------------------------------------------------
    def device_spec(self) -> DeviceSpec:
        return DeviceSpec(device=self.device_combo.currentText(), dtype=self.dtype_combo.currentText())

    def load(self, source: ModelSource) -> bool:
        if self.state.backend is None:
            self._pending = source
            self.status_label.setText(f"Will load {source.path} once PyTorch is ready…")
            return False
        device = self.device_spec()
        ctx = self.state.new_context()
        self._loading = (source, device)
        if not self.state.runner.start("load", self.state.backend.load(source, ctx, device), ctx.cancel):
            return False
        self.status_label.setText(f"Loading {source.path}…")
        return True

    def _on_demo_activated(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.ItemDataRole.UserRole)
        loading = getattr(self, "_loading", (None, None))[0]
        if self.state.runner.current == "load" and loading is not None and loading.path == name:
            return  # a click and an activation of the same item: one load
        if self.state.source is not None and self.state.source.path == name and self.state.summary is not None:
            return
        self.load(ModelSource(path=name))

    def open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a diffusers model folder")
        if path:
            self.load(ModelSource(path=path))

    def open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", "Model files (*.safetensors *.ckpt)")
        if path:
            self.load(ModelSource(path=path))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.drop_paths(paths)
            event.acceptProposedAction()

    def drop_paths(self, paths: list[Path]) -> None:
        p = paths[0]
        if p.is_dir() or p.suffix.lower() in MODEL_SUFFIXES:
            self.load(ModelSource(path=str(p)))
        else:
            self.status_label.setText(f"{p.name} is not a model: drop a diffusers folder or a .safetensors/.ckpt file")

    def _on_job_event(self, name: str, event: Any) -> None:
        if name == "load" and isinstance(event, Progress) and event.total:
            self.status_label.setText(f"Loading… {event.step}/{event.total}")

    def _on_job_done(self, name: str, result: JobResult) -> None:
        if name != "load":
            return
        source, device = getattr(self, "_loading", (None, DeviceSpec()))
        if result.ok:
            source = ModelSource(path=source.path, config_dir=source.config_dir, sha256=result.value.sha256)
            self.state.set_model(source, result.value, device)
        else:
            self.status_label.setText(f"Could not load: {result.error}" if result.error else "Loading cancelled.")
        self.changed.emit()

    def _update_summary(self) -> None:
        s = self.state.summary
        if s is None:
            for label in self.fields.values():
                label.setText("—")
            return
        self.status_label.setText("Loaded. Next: say what to forget.")
        values = {"name": s.name or Path(s.source).name, "kind": s.kind, "architecture": s.architecture,
                  "size": f"{s.resolution}×{s.resolution} px, {_human(s.parameters)} parameters, {s.dtype}",
                  "conditioning": {"text": "text prompts", "class": f"{s.num_classes} classes",
                                   "none": "unconditional"}[s.conditioning],
                  "sha256": s.sha256[:16] + "…", "source": s.source + (" (single file)" if s.single_file else "")}
        for key, text in values.items():
            self.fields[key].setText(text)
        self.fields["sha256"].setToolTip(s.sha256)
        for i in range(self.demo_list.count()):
            item = self.demo_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == s.name:
                self.demo_list.setCurrentItem(item)

    # wizard ----------------------------------------------------------------------------------------------
    def problem(self) -> str:
        if self.state.backend is None:
            return "PyTorch is still loading…"
        if self.state.summary is None:
            return "Load a model to continue."
        return ""

    def spec_part(self) -> dict[str, Any]:
        if self.state.source is None:
            return {}
        return {"model": self.state.source.model_dump(), "device": self.state.device.model_dump()}

    def apply_spec(self, spec: JobSpec) -> None:
        self.device_combo.setCurrentText(spec.device.device)
        self.dtype_combo.setCurrentText(spec.device.dtype)
        self.load(spec.model)
