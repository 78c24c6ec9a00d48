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


def test_gui_thread_descriptors_are_quick_and_import_nothing_after_warm_up():
    """demo_models/methods/metrics/export_formats run on the GUI thread: after the warm-up (worker thread) they
    must not import anything (torch least of all) and must answer in milliseconds."""
    import sys
    import time

    from concept_eraser.spec.summary import ModelSummary

    job = warmup_job(False)
    try:
        while True:
            next(job)
    except StopIteration as stop:
        backend = stop.value
    summary = ModelSummary(kind="sd", architecture="SD 1.x", prediction_type="epsilon", resolution=32, dtype="float32",
                           parameters=1, sha256="0" * 64, source="x")
    before = set(sys.modules)
    t0 = time.perf_counter()
    demos = backend.demo_models()
    cards = backend.methods()
    metrics = backend.metrics()
    formats = backend.export_formats(summary)
    seconds = time.perf_counter() - t0
    assert set(sys.modules) == before, sorted(set(sys.modules) - before)
    assert seconds < 1.0, seconds  # typically a few ms; generous for a loaded CI machine
    presets = {d.name: d.extra.get("retain_presets") for d in demos}
    assert presets["digits"]["All other digits"] == [] and len(presets["shapes"]) >= 2
    assert {"lpips", "ssim-distance"} <= {m.key for m in metrics}
    assert "esd-x" in {c.info.key for c in cards} and {f.key for f in formats} >= {"diffusers", "lora"}
