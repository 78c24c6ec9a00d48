"""The event loop keeps running during a run (previews every step), and the app entry point starts and quits."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from concept_eraser.gui import app as gui_app
from concept_eraser.gui.main_window import MainWindow

from .conftest import fill_digits, make_window


def test_event_loop_never_blocks_long_during_a_run(qtbot):
    """Event delivery on the GUI thread is time-boxed: no batch of handlers costs 100 ms of GUI-thread CPU time,
    even with a preview every step. (Wall-clock gaps also depend on how busy the machine is; they are checked
    loosely.)"""
    window = make_window(qtbot, step_delay=0.002)
    window.state.settings.setValue("preview_every", 1)  # worst case: a preview per step
    window.show()
    fill_digits(qtbot, window, steps=300)
    window.go(4)
    costs: list[float] = []
    drain = window.runner._drain

    def timed_drain():
        t0 = time.thread_time()
        drain()
        costs.append(time.thread_time() - t0)

    window.runner._drain = timed_drain
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    with qtbot.waitSignal(window.runner.done, timeout=20000) as blocker:
        window.pages[4].start()
    timer.stop()
    assert blocker.args[1].ok
    assert len(costs) > 5 and max(costs) < 0.1, f"longest batch {max(costs) * 1000:.0f} ms of CPU"
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(gaps) > 20 and max(gaps) < 1.0, f"longest pause {max(gaps) * 1000:.0f} ms"


def test_main_opens_the_window_on_the_fake_backend_and_quits(qtbot, monkeypatch):
    app = QApplication.instance()
    seen = {}

    def check_and_close():
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        seen["window"] = windows[-1]
        qtbot.waitUntil(lambda: windows[-1].state.backend is not None, timeout=5000)
        seen["status"] = windows[-1].status_label.text()
        windows[-1].close()
        app.exit(0)  # synchronous; quit() would post an event that could end a later test's event loop

    quit_on_close = app.quitOnLastWindowClosed()
    app.setQuitOnLastWindowClosed(False)
    QTimer.singleShot(100, check_and_close)
    try:
        assert gui_app.main(["--fake"]) == 0
    finally:
        QApplication.setQuitOnLastWindowClosed(quit_on_close)
    assert seen["status"] == "Ready (fake backend)."
    seen["window"].deleteLater()
