"""GUI test fixtures: offscreen Qt, temporary QSettings and runs folder, a MainWindow on the FakeBackend."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from concept_eraser.gui.app import warmup_job  # noqa: E402
from concept_eraser.gui.main_window import MainWindow  # noqa: E402


@pytest.fixture(autouse=True)
def _temp_settings(tmp_path, monkeypatch):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    monkeypatch.setenv("CONCEPT_ERASER_RUNS", str(tmp_path / "runs"))
    yield


def make_window(qtbot, **fake_options) -> MainWindow:
    window = MainWindow(backend_label="fake backend")
    qtbot.addWidget(window)
    window.ask = lambda title, text: True
    window.start_backend(lambda: warmup_job(True, **fake_options))
    qtbot.waitUntil(lambda: window.state.backend is not None, timeout=5000)
    return window


@pytest.fixture
def window(qtbot):
    w = make_window(qtbot)
    yield w
    w.runner.cancel()
    w.runner.wait_done(10)


def load_demo(qtbot, window: MainWindow, name: str) -> None:
    page = window.pages[0]
    for i in range(page.demo_list.count()):
        item = page.demo_list.item(i)
        if item.data(0x0100) == name:
            page._on_demo_activated(item)
    qtbot.waitUntil(lambda: window.state.summary is not None and window.state.summary.name == name, timeout=5000)


def fill_digits(qtbot, window: MainWindow, steps: int = 30) -> None:
    """Digits demo: forget class 3, keep 1 and 7, ESD-x with `steps` steps."""
    load_demo(qtbot, window, "digits")
    forget, keep, method = window.pages[1], window.pages[2], window.pages[3]
    forget.set_class_checked(3)
    keep.retain_edit.setText("1")
    keep.add_from_edit()
    keep.retain_edit.setText("7")
    keep.add_from_edit()
    keep.seed_count.setValue(3)
    method.select("esd-x")
    method.form.set_values({"steps": steps})
