"""Start-up and responsiveness of the desktop app on the real engine, in a real window (run under Xvfb or a desktop).

    xvfb-run -a python bench/gui_startup.py [--steps 20]

Prints: seconds from process start to the window being exposed (shown on screen), to the engine being ready
(torch loaded on the worker thread), to the digits demo being loaded; then runs a short ESD-x (forget 3) and
reports the longest gap between 20 ms GUI-thread timer ticks while it runs (the UI's worst stall).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = time.time()  # close to the process start; the shell's `date` before launching gives the rest
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--launched-at", type=float, default=None, help="`date +%%s.%%N` just before launching")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ce-startup-"))
    os.environ["CONCEPT_ERASER_RUNS"] = str(scratch / "runs")
    from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(scratch / "settings"))
    from concept_eraser.gui.app import warmup_job
    from concept_eraser.gui.main_window import MainWindow

    start = args.launched_at or T0
    marks: dict[str, float] = {}

    class Exposed(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Expose and obj.isExposed() and "window exposed" not in marks:
                marks["window exposed"] = time.time() - start
            return False

    app = QApplication(sys.argv[:1])
    window = MainWindow()
    window.state.settings.setValue("eval_samples", 8)
    handle_filter = Exposed()
    window.show()
    window.windowHandle().installEventFilter(handle_filter)
    marks["show() returned"] = time.time() - start
    window.start_backend(lambda: warmup_job(False))
    window.load_when_ready("digits")
    state = window.state
    state.backend_ready.connect(lambda: marks.setdefault("engine ready", time.time() - start))
    state.model_changed.connect(lambda: marks.setdefault("digits loaded", time.time() - start))

    def wait(cond, timeout=900.0):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.005)

    wait(lambda: state.summary is not None)
    model, forget, keep, method, run, compare, export = window.pages
    window.go(1)
    forget.set_class_checked(3)
    window.go(2)
    keep.apply_preset("All other digits")
    keep.seed_count.setValue(4)
    window.go(3)
    method.select("esd-x")
    method.form.set_values({"steps": args.steps})
    window.go(4)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    t_run = time.monotonic()
    run.start()
    wait(lambda: not window.runner.busy)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    for k, v in marks.items():
        print(f"{k:22} {v:7.2f} s")
    print(f"{'run (' + str(args.steps) + ' steps)':22} {time.monotonic() - t_run:7.2f} s  "
          f"({window.runner.last_result.status if window.runner.last_result else '?'})")
    if gaps:
        gaps.sort()
        print(f"{'UI timer gap max':22} {gaps[-1] * 1000:7.0f} ms  (median {gaps[len(gaps) // 2] * 1000:.0f} ms, "
              f"p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, {len(gaps)} ticks of 20 ms)")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
