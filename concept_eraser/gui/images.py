"""numpy uint8 images -> QImage/QPixmap, made on the GUI thread. The QImage keeps a reference to its buffer."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def to_qimage(array: np.ndarray) -> QImage:
    """A QImage over a contiguous copy of `array` (H, W, 3 or H, W uint8); the copy is kept on the image."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    if a.ndim == 2:
        a = np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    h, w, _ = a.shape
    img = QImage(a.data, w, h, a.strides[0], QImage.Format.Format_RGB888)
    img._buffer = a  # noqa: SLF001 - QImage does not own numpy memory; keep it alive as long as the image
    return img


def to_pixmap(array: np.ndarray, size: int | None = None, smooth: bool = False) -> QPixmap:
    """Pixmap of `array`, scaled to `size` px (nearest neighbour by default: tiny model outputs stay crisp)."""
    pm = QPixmap.fromImage(to_qimage(array))
    if size:
        mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
        pm = pm.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, mode)
    return pm


def heat_colour(value: float) -> tuple[int, int, int]:
    """0 -> yellow, 1 -> red (the LPIPS overlay; its alpha also grows with the value)."""
    v = float(min(max(value, 0.0), 1.0))
    return 255, int(220 * (1 - v)), 0
