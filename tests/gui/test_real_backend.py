"""The wizard on the real engine (LocalBackend) where it exists: warm-up on the worker thread, loading the digits demo."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from concept_eraser.gui.app import warmup_job
from concept_eraser.gui.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or not (ROOT / "resources" / "models" / "digits").is_dir(),
    reason="needs torch and the built digits demo model",
)


def test_real_backend_loads_the_digits_demo(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.start_backend(lambda: warmup_job(False))
    qtbot.waitUntil(lambda: window.state.backend is not None, timeout=60000)
    assert type(window.state.backend).__name__ == "LocalBackend"
    page = window.pages[0]
    names = [page.demo_list.item(i).data(0x0100) for i in range(page.demo_list.count())]
    assert "digits" in names and not any("judge" in n for n in names)
    from concept_eraser.spec.jobspec import ModelSource

    with qtbot.waitSignal(window.runner.done, timeout=60000) as blocker:
        page.load(ModelSource(path="digits"))
    assert blocker.args[1].ok, blocker.args[1].error
    summary = window.state.summary
    assert summary.kind == "ddpm-cond" and summary.num_classes == 10
    assert window.pages[1].class_list.count() == 10 and window.next_button.isEnabled()
