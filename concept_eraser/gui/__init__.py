"""PySide6 front end: app, main window, wizard pages, widgets, job runner. Never imports torch (see app.py)."""
