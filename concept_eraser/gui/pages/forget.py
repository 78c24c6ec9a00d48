"""Forget step: the concepts to erase (texts or classes, by the model's conditioning), example images, anchor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QIcon, QImageReader, QPainter, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from concept_eraser.spec.files import sha256_file
from concept_eraser.spec.jobspec import JobSpec

from ..state import AppState
from .base import Page

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageListWidget(QListWidget):
    """Thumbnails of example images; dropped files arrive as `files_dropped` (the page adds them and names bad ones)."""

    files_dropped = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(72, 72))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.setAcceptDrops(True)
        self.setDragDropMode(QListWidget.DragDropMode.DropOnly)
        self.setAccessibleName("Example images")
        self.setToolTip("Images of the concept (optional for most methods). Drop files here; Delete removes.")
        self.bad: list[str] = []

    def paths(self) -> list[str]:
        return [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]

    def add_paths(self, paths: list[str | Path]) -> list[str]:
        """Add readable images (thumbnails made here, on the GUI thread); return the names of bad files."""
        bad, have = [], set(self.paths())
        for raw in paths:
            p = Path(raw)
            if str(p) in have:
                continue
            reader = QImageReader(str(p))
            reader.setAutoTransform(True)
            img = reader.read() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES else None
            if img is None or img.isNull():
                bad.append(p.name)
                continue
            item = QListWidgetItem(QIcon(QPixmap.fromImage(img).scaled(
                72, 72, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)), p.name)
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            item.setToolTip(f"{p}\n{img.width()}×{img.height()}")
            self.addItem(item)
        self.bad = bad
        return bad

    def remove_selected(self) -> None:
        for item in self.selectedItems():
            self.takeItem(self.row(item))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        self.files_dropped.emit(paths)

    def paintEvent(self, event) -> None:  # noqa: N802
        super().paintEvent(event)
        if self.count() == 0:
            p = QPainter(self.viewport())
            p.setPen(self.palette().placeholderText().color())
            p.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, "Drop images here\n(png, jpg, webp, bmp)")
            p.end()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_selected()
            self.model().layoutChanged.emit()
        else:
            super().keyPressEvent(event)


class ForgetPage(Page):
    title = "2 · Forget"
    subtitle = "What should the model no longer produce?"

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(state, parent)
        row = QHBoxLayout()
        box = QGroupBox("Concepts to forget")
        bl = QVBoxLayout(box)
        self.stack = QStackedWidget()
        # text concepts
        text_page = QWidget()
        tl = QVBoxLayout(text_page)
        tl.setContentsMargins(0, 0, 0, 0)
        add_row = QHBoxLayout()
        self.concept_edit = QLineEdit()
        self.concept_edit.setPlaceholderText("e.g. circle, or Van Gogh style")
        self.concept_edit.setToolTip("A word or phrase the model should forget; press Enter to add it.")
        self.concept_edit.returnPressed.connect(self.add_concept_from_edit)
        self.add_concept_button = QPushButton("&Add")
        self.add_concept_button.clicked.connect(self.add_concept_from_edit)
        add_row.addWidget(self.concept_edit, 1)
        add_row.addWidget(self.add_concept_button)
        tl.addLayout(add_row)
        self.concept_list = QListWidget()
        self.concept_list.setAccessibleName("Concepts")
        self.concept_list.setToolTip("Double-click to edit; Delete removes the selected concept.")
        self.concept_list.itemChanged.connect(lambda _i: self.changed.emit())
        tl.addWidget(self.concept_list)
        self.remove_concept_button = QPushButton("&Remove concept")
        self.remove_concept_button.clicked.connect(self.remove_concept)
        tl.addWidget(self.remove_concept_button)
        self.stack.addWidget(text_page)
        # class picker
        self.class_list = QListWidget()
        self.class_list.setAccessibleName("Classes to forget")
        self.class_list.setToolTip("Tick the classes the model should forget (Space toggles).")
        self.class_list.itemChanged.connect(lambda _i: self.changed.emit())
        self.stack.addWidget(self.class_list)
        self.uncond_label = QLabel("This model is unconditional: there is no prompt or class to erase. "
                                   "Add example images of what it should forget instead.")
        self.uncond_label.setWordWrap(True)
        self.stack.addWidget(self.uncond_label)
        bl.addWidget(self.stack, 1)
        anchor_form = QFormLayout()
        self.anchor_edit = QLineEdit()
        self.anchor_edit.setPlaceholderText("optional, e.g. a generic shape")
        self.anchor_edit.setToolTip("What the concept should turn into instead (used by anchor-based methods).")
        self.anchor_edit.textChanged.connect(lambda _t: self.changed.emit())
        self.anchor_combo = QComboBox()
        self.anchor_combo.setToolTip("The class the forgotten classes should turn into (anchor-based methods).")
        self.anchor_combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self.anchor_stack = QStackedWidget()
        self.anchor_stack.addWidget(self.anchor_edit)
        self.anchor_stack.addWidget(self.anchor_combo)
        self.anchor_stack.setFixedHeight(self.anchor_edit.sizeHint().height())
        anchor_form.addRow("A&nchor:", self.anchor_stack)
        bl.addLayout(anchor_form)
        row.addWidget(box, 1)

        images = QGroupBox("Example images (optional)")
        il = QVBoxLayout(images)
        self.image_list = ImageListWidget()
        self.image_list.files_dropped.connect(self.add_images)
        self.image_list.model().rowsInserted.connect(lambda *_: self.changed.emit())
        self.image_list.model().rowsRemoved.connect(lambda *_: self.changed.emit())
        il.addWidget(self.image_list)
        ib = QHBoxLayout()
        self.add_images_button = QPushButton("Add &images…")
        self.add_images_button.clicked.connect(self.browse_images)
        self.remove_images_button = QPushButton("Remo&ve selected")
        self.remove_images_button.clicked.connect(self.image_list.remove_selected)
        ib.addWidget(self.add_images_button)
        ib.addWidget(self.remove_images_button)
        il.addLayout(ib)
        self.bad_label = QLabel("")
        self.bad_label.setWordWrap(True)
        self.bad_label.setStyleSheet("color: #b00020")
        il.addWidget(self.bad_label)
        row.addWidget(images, 1)
        self.layout_.addLayout(row, 1)
        state.model_changed.connect(self._on_model_changed)

    # model -----------------------------------------------------------------------------------------------
    @property
    def conditioning(self) -> str:
        return self.state.summary.conditioning if self.state.summary else "text"

    def _on_model_changed(self) -> None:
        s = self.state.summary
        self.concept_list.clear()
        self.class_list.clear()
        self.anchor_combo.clear()
        self.anchor_edit.clear()
        if s is None:
            return
        self.stack.setCurrentIndex({"text": 0, "class": 1, "none": 2}[s.conditioning])
        self.anchor_stack.setCurrentIndex(1 if s.conditioning == "class" else 0)
        self.anchor_stack.setEnabled(s.conditioning != "none")
        if s.conditioning == "class":
            self.anchor_combo.addItem("(none)", None)
            names = s.class_names or tuple(str(i) for i in range(s.num_classes or 0))
            for i, name in enumerate(names):
                item = QListWidgetItem(f"{i}: {name}" if name != str(i) else f"class {i}")
                item.setData(Qt.ItemDataRole.UserRole, i)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                self.class_list.addItem(item)
                self.anchor_combo.addItem(f"class {i}" + (f" ({name})" if name != str(i) else ""), i)
        self.changed.emit()

    # editing ---------------------------------------------------------------------------------------------
    def add_concept(self, text: str) -> None:
        text = text.strip()
        if not text or text in self.concepts_text():
            return
        item = QListWidgetItem(text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.concept_list.addItem(item)
        self.changed.emit()

    def add_concept_from_edit(self) -> None:
        self.add_concept(self.concept_edit.text())
        self.concept_edit.clear()

    def remove_concept(self) -> None:
        for item in self.concept_list.selectedItems():
            self.concept_list.takeItem(self.concept_list.row(item))
        self.changed.emit()

    def concepts_text(self) -> list[str]:
        return [self.concept_list.item(i).text().strip() for i in range(self.concept_list.count())
                if self.concept_list.item(i).text().strip()]

    def set_class_checked(self, label: int, on: bool = True) -> None:
        for i in range(self.class_list.count()):
            item = self.class_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == label:
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def checked_classes(self) -> list[int]:
        return [self.class_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.class_list.count())
                if self.class_list.item(i).checkState() == Qt.CheckState.Checked]

    def add_images(self, paths: list[str | Path]) -> list[str]:
        bad = self.image_list.add_paths(paths)
        self.bad_label.setText(f"Not added (not a readable image): {', '.join(bad)}" if bad else "")
        self.changed.emit()
        return bad

    def browse_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Example images", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp)")
        if paths:
            self.add_images(paths)

    # wizard ----------------------------------------------------------------------------------------------
    def problem(self) -> str:
        cond = self.conditioning
        if cond == "text" and not self.concepts_text():
            return "Add at least one concept to forget (type it and press Enter)."
        if cond == "class" and not self.checked_classes():
            return "Tick at least one class to forget."
        if cond == "none" and not self.image_list.count():
            return "Add example images of what to forget."
        if cond == "class" and self.anchor_combo.currentData() in self.checked_classes():
            return "The anchor cannot be one of the classes to forget."
        return ""

    def spec_part(self, with_images: bool = True) -> dict[str, Any]:
        cond = self.conditioning
        if cond == "class":
            concepts = [{"label": c} for c in self.checked_classes()]
            anchor = self.anchor_combo.currentData()
            anchor = None if anchor is None else {"label": anchor}
        else:
            concepts = [{"text": t} for t in self.concepts_text()] if cond == "text" else []
            text = self.anchor_edit.text().strip()
            anchor = {"text": text} if text and cond == "text" else None
        images = [{"path": p, "sha256": self._sha(p)} for p in self.image_list.paths()] if with_images else []
        return {"concepts": concepts, "anchor": anchor, "forget_images": images}

    def _sha(self, path: str) -> str | None:
        cache = self.__dict__.setdefault("_sha_cache", {})
        if path not in cache:
            cache[path] = sha256_file(path) if Path(path).is_file() else None
        return cache[path]

    def concept_rows(self) -> list[dict[str, Any]]:
        """The forgotten concepts as grid rows (they head the before/after grid)."""
        return [{"prompt": c["text"]} if "text" in c else {"label": c["label"]} for c in self.spec_part(False)["concepts"]]

    def apply_spec(self, spec: JobSpec) -> None:
        for c in spec.concepts:
            if c.label is not None:
                self.set_class_checked(c.label)
            elif c.text:
                self.add_concept(c.text)
        if spec.anchor is not None:
            if spec.anchor.label is not None:
                self.anchor_combo.setCurrentIndex(max(self.anchor_combo.findData(spec.anchor.label), 0))
            else:
                self.anchor_edit.setText(spec.anchor.text or "")
        self.image_list.clear()
        bad = self.add_images([f.path for f in spec.forget_images])
        if bad:
            self.bad_label.setText(f"Missing or unreadable images from the job file: {', '.join(bad)}")
