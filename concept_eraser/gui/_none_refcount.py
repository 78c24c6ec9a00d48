"""Workaround: PySide6 6.12.0 on CPython < 3.12 drops a reference to None on every call of a void C++ method.

Measured here (PySide6-Essentials 6.12.0, Python 3.11.7): each QLabel.setText, QWidget.update, QPainter.drawLine,
QProgressBar.setValue, ... lowers sys.getrefcount(None) by one. None starts near 5,000 references, so a live GUI
aborts within seconds with "Fatal Python error: none_dealloc: deallocating None". CPython 3.12 made None immortal
(PEP 683), which is why the binding no longer increments it.

`apply()` detects the leak with one harmless void call and, only when it is there, gives None a huge reference
count (as 3.12 does). None is never freed anyway: deallocating it is a fatal error, not a state to preserve.
"""

from __future__ import annotations

import ctypes
import sys

_RESERVE = 1 << 40  # ~10^12 leaked references before it could matter again


def leaks_none() -> bool:
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(8):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before


def apply() -> bool:
    """Return True when the workaround was needed and applied."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not leaks_none():
        return False
    refcnt = ctypes.c_ssize_t.from_address(id(None))  # ob_refcnt is the first field of every PyObject
    if refcnt.value < _RESERVE:
        refcnt.value += _RESERVE
    return True
