"""PySide6 front end: app, main window, wizard pages, widgets, job runner. Never imports torch (see app.py)."""

from . import _none_refcount

NONE_REFCOUNT_WORKAROUND = _none_refcount.apply()  # PySide6 6.12 + Python 3.11: see _none_refcount.py
