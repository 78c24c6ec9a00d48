"""Image widgets painted with QPainter: a strip of captioned previews and the before/after compare view."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap, QPolygon
from PySide6.QtWidgets import QSizePolicy, QWidget

from concept_eraser.spec.events import Grid

from ..images import heat_colour, to_pixmap


class ImageStripWidget(QWidget):
    """A row of images with captions under them (live previews, thumbnails)."""

    def __init__(self, cell: int = 96, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cell = cell
        self.pixmaps: list[QPixmap] = []
        self.captions: list[str] = []
        self.title = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_images(self, images, captions=(), title: str = "") -> None:
        self.pixmaps = [to_pixmap(np.asarray(a)) for a in images]
        self.captions = list(captions) + [""] * (len(self.pixmaps) - len(captions))
        self.title = title
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        n = max(len(self.pixmaps), 4)
        return QSize(n * (self.cell + 8), self.cell + 44)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        fm = p.fontMetrics()
        p.drawText(QRect(0, 0, self.width(), fm.height()), Qt.AlignmentFlag.AlignLeft, self.title)
        y = fm.height() + 4
        for i, pm in enumerate(self.pixmaps):
            x = i * (self.cell + 8)
            p.drawPixmap(QRect(x, y, self.cell, self.cell), pm)
            p.drawText(QRect(x, y + self.cell + 2, self.cell, fm.height()), Qt.AlignmentFlag.AlignHCenter,
                       fm.elidedText(self.captions[i], Qt.TextElideMode.ElideRight, self.cell))
        p.end()


MODES = ("side", "toggle", "slider", "difference")
MODE_TITLES = {"side": "Side by side", "toggle": "Toggle per cell", "slider": "Slider", "difference": "Difference"}


class CompareWidget(QWidget):
    """Before and after grids with the same seeds: side by side, per-cell toggle, slider or difference view.

    Click a cell to flip it between before and after (toggle mode); drag in slider mode; `zoom` is the cell
    size in pixels; `heat` overlays the per-cell LPIPS values on the after grid.
    """

    cell_toggled = Signal(int, int)
    zoom_requested = Signal(int)  # Ctrl+wheel / Ctrl+plus/minus: the page moves its zoom slider

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.before: Grid | None = None
        self.after: Grid | None = None
        self.heat: np.ndarray | None = None
        self.show_heat = False
        self.mode = "side"
        self.zoom = 72
        self.split = 0.5
        self.flipped: set[tuple[int, int]] = set()
        self._pix: dict[tuple[str, int, int], QPixmap] = {}
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip("Click a cell to flip it between before and after (T flips all); drag to move the slider; "
                        "Ctrl+wheel or Ctrl+plus/minus zooms.")
        self.setAccessibleName("Before and after grids")

    # state -------------------------------------------------------------------------------------------
    def set_grids(self, before: Grid | None, after: Grid | None) -> None:
        self.before, self.after = before, after
        self.flipped.clear()
        self._pix.clear()
        for which, grid in (("before", before), ("after", after)):
            if grid is None:
                continue
            rows, cols = grid.shape
            for r in range(rows):
                for c in range(cols):
                    self._pix[(which, r, c)] = to_pixmap(grid.images[r, c])
        if before is not None and after is not None and before.images.shape == after.images.shape:
            diff = np.abs(before.images.astype(np.int16) - after.images.astype(np.int16))
            diff = np.clip(diff * 3, 0, 255).astype(np.uint8)
            rows, cols = before.shape
            for r in range(rows):
                for c in range(cols):
                    self._pix[("diff", r, c)] = to_pixmap(diff[r, c])
        self._relayout()

    def _relayout(self) -> None:
        self.updateGeometry()
        self.resize(self.sizeHint())  # inside a non-resizing QScrollArea the size follows the content
        self.update()

    def fit_zoom(self, width: int, height: int) -> int:
        """The largest cell size (32..256 px) at which the current view fits width x height."""
        g = self._grid()
        if g is None:
            return self.zoom
        rows, cols = g.shape
        panels = len(self._panels())
        avail_w = (width - self._label_width() - 16 * panels - 8) / (panels * cols) - 4
        avail_h = (height - self.fontMetrics().height() * 2 - 16) / rows - 4
        return int(min(max(min(avail_w, avail_h), 32), 256))

    def set_heat(self, per_cell: np.ndarray | None) -> None:
        self.heat = None if per_cell is None else np.asarray(per_cell, dtype=np.float32)
        self.update()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown compare mode {mode!r}")
        self.mode = mode
        self._relayout()

    def set_zoom(self, px: int) -> None:
        self.zoom = int(px)
        self._relayout()

    def toggle_cell(self, r: int, c: int) -> None:
        self.flipped ^= {(r, c)}
        self.cell_toggled.emit(r, c)
        self.update()

    # geometry ----------------------------------------------------------------------------------------
    def _grid(self) -> Grid | None:
        return self.after or self.before

    def _label_width(self) -> int:
        g = self._grid()
        if g is None:
            return 0
        fm = self.fontMetrics()
        return min(max(fm.horizontalAdvance(t) for t in g.row_labels) + 12, 220)

    def _panels(self) -> list[str]:
        return ["before", "after"] if self.mode == "side" else [self.mode]

    def _origin(self, panel_index: int) -> QPoint:
        g = self._grid()
        cols = g.shape[1] if g else 0
        panel_w = cols * (self.zoom + 4) + 16
        return QPoint(self._label_width() + panel_index * panel_w, self.fontMetrics().height() * 2 + 8)

    def cell_at(self, pos: QPoint) -> tuple[int, int, int] | None:
        """(panel, row, col) under `pos`, or None."""
        g = self._grid()
        if g is None:
            return None
        for i, _ in enumerate(self._panels()):
            o = self._origin(i)
            c, r = (pos.x() - o.x()) // (self.zoom + 4), (pos.y() - o.y()) // (self.zoom + 4)
            if 0 <= r < g.shape[0] and 0 <= c < g.shape[1] and pos.x() >= o.x() and pos.y() >= o.y():
                return i, r, c
        return None

    def sizeHint(self) -> QSize:  # noqa: N802
        g = self._grid()
        if g is None:
            return QSize(400, 200)
        rows, _ = g.shape
        o = self._origin(len(self._panels()))
        return QSize(o.x() + 8, o.y() + rows * (self.zoom + 4) + 8)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return self.sizeHint()

    # events ------------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        hit = self.cell_at(event.position().toPoint())
        if hit is None:
            return
        _, r, c = hit
        if self.mode == "slider":
            self._drag(event)
        else:
            self.toggle_cell(r, c)

    def wheelEvent(self, event) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            step = 8 if event.angleDelta().y() > 0 else -8
            self.zoom_requested.emit(int(min(max(self.zoom + step, 32), 256)))
            event.accept()
        else:
            super().wheelEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        """T flips every cell (before <-> after); Ctrl+plus/minus zoom."""
        key, ctrl = event.key(), bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        g = self._grid()
        if key == Qt.Key.Key_T and g is not None:
            rows, cols = g.shape
            self.flipped = {(r, c) for r in range(rows) for c in range(cols)} - self.flipped
            self.update()
        elif ctrl and key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal, Qt.Key.Key_Minus):
            self.zoom_requested.emit(int(min(max(self.zoom + (8 if key != Qt.Key.Key_Minus else -8), 32), 256)))
        else:
            super().keyPressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self.mode == "slider":
            self._drag(event)

    def _drag(self, event: QMouseEvent) -> None:
        o = self._origin(0)
        x = (event.position().x() - o.x()) % (self.zoom + 4)
        self.split = float(min(max(x / self.zoom, 0.0), 1.0))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        g = self._grid()
        fm = p.fontMetrics()
        if g is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No grids yet: run the job first.")
            p.end()
            return
        rows, cols = g.shape
        z = self.zoom
        for i, panel in enumerate(self._panels()):
            o = self._origin(i)
            title = {"before": "Before", "after": "After", "toggle": "After (click a cell: before)",
                     "slider": "Before | After", "difference": "Difference ×3"}[panel]
            p.setPen(self.palette().windowText().color())
            p.drawText(QRect(o.x(), 0, cols * (z + 4), fm.height()), Qt.AlignmentFlag.AlignLeft, title)
            for c, seed in enumerate(g.seeds):
                p.drawText(QRect(o.x() + c * (z + 4), fm.height() + 2, z, fm.height()), Qt.AlignmentFlag.AlignHCenter,
                           f"seed {seed}")
            for r in range(rows):
                if i == 0:
                    p.drawText(QRect(0, o.y() + r * (z + 4), self._label_width() - 8, z),
                               Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                               fm.elidedText(g.row_labels[r], Qt.TextElideMode.ElideRight, self._label_width() - 8))
                for c in range(cols):
                    rect = QRect(o.x() + c * (z + 4), o.y() + r * (z + 4), z, z)
                    self._paint_cell(p, panel, r, c, rect)
        p.end()

    def _paint_cell(self, p: QPainter, panel: str, r: int, c: int, rect: QRect) -> None:
        which = panel
        if panel == "toggle":
            which = "before" if (r, c) in self.flipped else "after"
        elif panel == "after" and (r, c) in self.flipped:
            which = "before"
        if panel == "slider":
            before, after = self._pix.get(("before", r, c)), self._pix.get(("after", r, c))
            if before is not None:
                p.drawPixmap(rect, before)
            if after is not None:
                cut = int(rect.width() * self.split)
                src_x = int(after.width() * self.split)
                p.drawPixmap(QRect(rect.x() + cut, rect.y(), rect.width() - cut, rect.height()), after,
                             QRect(src_x, 0, after.width() - src_x, after.height()))
                p.setPen(QPen(QColor(255, 200, 0), 2))
                p.drawLine(rect.x() + cut, rect.y(), rect.x() + cut, rect.bottom())
            return
        key = ("diff" if panel == "difference" else which, r, c)
        pm = self._pix.get(key)
        if pm is not None:
            p.drawPixmap(rect, pm)
        if which == "before" and panel != "before":
            p.setPen(QPen(QColor(40, 120, 255), 2))
            p.drawRect(rect.adjusted(1, 1, -1, -1))
        if self.show_heat and self.heat is not None and panel in ("after", "toggle", "difference"):
            if r < self.heat.shape[0] and c < self.heat.shape[1]:
                v = float(self.heat[r, c])
            else:
                v = float("nan")
            if v == v:  # NaN: a cell the metric did not score (e.g. a forget row)
                red, green, blue = heat_colour(v)
                p.fillRect(rect, QColor(red, green, blue, int(40 + 150 * min(max(v, 0.0), 1.0))))
                if self.zoom >= 56:  # the value as text only where it fits
                    p.setPen(QColor(255, 255, 255))
                    p.drawText(rect.adjusted(2, 2, -2, -2), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                               f"{v:.2f}")


class LossPlotWidget(QWidget):
    """A small live line plot of one scalar (the training loss) against the step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.total: int | None = None
        self.label = "loss"
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Loss plot")

    def clear(self, total: int | None = None) -> None:
        self.points, self.total = [], total
        self.update()

    def add(self, step: int, value: float) -> None:
        self.points.append((step, float(value)))
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(420, 180)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = p.fontMetrics()
        left, bottom = fm.horizontalAdvance("0.000000") + 10, fm.height() + 8
        area = QRect(left, 8, self.width() - left - 10, self.height() - bottom - 12)
        p.fillRect(area, self.palette().base())
        p.setPen(self.palette().mid().color())
        p.drawRect(area)
        text = self.palette().windowText().color()
        if not self.points:
            p.setPen(text)
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, f"{self.label} appears here during the run")
            p.end()
            return
        xs = [s for s, _ in self.points]
        ys = [v for _, v in self.points]
        x_max = max(self.total or 0, max(xs), 1)
        y_min, y_max = min(ys), max(ys)
        if y_max - y_min < 1e-9:
            y_min, y_max = y_min - 0.5, y_max + 0.5

        def at(s: float, v: float) -> QPoint:
            return QPoint(area.left() + int(area.width() * s / x_max),
                          area.bottom() - int(area.height() * (v - y_min) / (y_max - y_min)))

        p.setPen(text)
        p.drawText(QRect(0, area.top() - 4, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight, f"{y_max:.3g}")
        p.drawText(QRect(0, area.bottom() - fm.height() + 4, left - 4, fm.height()), Qt.AlignmentFlag.AlignRight,
                   f"{y_min:.3g}")
        p.drawText(QRect(area.left(), area.bottom() + 4, area.width(), fm.height()), Qt.AlignmentFlag.AlignRight,
                   f"step {xs[-1]} / {x_max}")
        p.drawText(QRect(area.left(), area.bottom() + 4, area.width(), fm.height()), Qt.AlignmentFlag.AlignLeft,
                   f"{self.label} {ys[-1]:.4f}")
        p.setPen(QPen(QColor(38, 110, 210), 2))
        stride = max(1, len(self.points) // max(area.width(), 1))
        p.drawPolyline(QPolygon([at(s, v) for s, v in self.points[::stride]]))
        p.end()
