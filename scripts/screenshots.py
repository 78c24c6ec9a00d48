"""Drive the wizard through every page in a real window and save one PNG per page (run by screenshots.sh).

--backend real (default) uses LocalBackend on the bundled digits demo with a short ESD-x run (--steps), a few
judged samples and a small leak test, so Run/Compare/Export show real results; --backend fake uses the
torch-free FakeBackend (no torch needed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(app: QApplication, cond, timeout: float = 600.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def settle(app: QApplication, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--backend", choices=("fake", "real"), default=os.environ.get("SCREENSHOT_BACKEND", "real"))
    parser.add_argument("--demo", default="digits")
    parser.add_argument("--steps", type=int, default=None, help="ESD-x optimizer steps (default: real 100, the method default; fake 200)")
    parser.add_argument("--text-demo", default="shapes", help="also shoot Forget/Keep for this text model ('' skips)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ce-shots-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(scratch / "settings"))
    os.environ["CONCEPT_ERASER_RUNS"] = str(scratch / "runs")

    from concept_eraser.gui.app import warmup_job
    from concept_eraser.gui.main_window import MainWindow

    fake = args.backend == "fake"
    steps = args.steps or (200 if fake else 100)
    if not fake:  # a short real run: judged scores on 16 samples per row, previews every 5 steps
        settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "concept_eraser", "concept_eraser")
        settings.setValue("eval_samples", 16)
        settings.setValue("preview_every", 5)
        settings.sync()
    app = QApplication(sys.argv[:1])
    window = MainWindow(backend_label="fake backend" if args.backend == "fake" else "")
    window.resize(1280, 800)
    window.show()
    window.start_backend(lambda: warmup_job(fake, **({"step_delay": 0.01} if fake else {})))
    state = window.state

    def shot(name: str) -> None:
        settle(app)
        pixmap = window.screen().grabWindow(window.winId())
        path = out / f"{name}.png"
        pixmap.save(str(path), "PNG")
        try:  # 256-colour PNGs are a third of the size and look the same for a UI
            from PIL import Image

            with Image.open(path) as im:
                small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            small.save(path, optimize=True)
        except ImportError:
            pass
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")

    shot("0-startup")
    wait(app, lambda: state.backend is not None, what="the backend")
    model, forget, keep, method, run, compare, export = window.pages
    for i in range(model.demo_list.count()):
        item = model.demo_list.item(i)
        if item.data(0x0100) == args.demo:
            model.demo_list.setCurrentItem(item)
            model._on_demo_activated(item)
    wait(app, lambda: state.summary is not None, what="the model")
    shot("1-model")

    window.go(1)
    if state.summary.conditioning == "class":
        forget.set_class_checked(3)
        forget.anchor_combo.setCurrentIndex(forget.anchor_combo.findData(8))
    else:
        forget.add_concept("circle")
        forget.anchor_edit.setText("a shape")
    shot("2-forget")

    window.go(2)
    keep.apply_preset(keep.preset_combo.itemText(0))
    keep.seed_count.setValue(6)
    shot("3-keep")

    window.go(3)
    method.select("esd-x")
    method.form.set_values({"steps": steps})
    method.form.advanced_button.click()
    shot("4-method")

    window.go(4)
    run.start()
    wait(app, lambda: len(run.loss_plot.points) >= steps * 0.6, what="training steps")
    shot("5-run")
    wait(app, lambda: state.outcome is not None or not window.runner.busy, what="the run")
    if state.outcome is None:
        raise SystemExit(f"the run did not finish: {window.runner.last_result}")

    window.go(5)
    compare.heat_check.setChecked(True)
    compare.compare.toggle_cell(1, 2)
    if not fake:  # a small leak test: 4 paraphrase samples, 2 short attack attempts
        compare.leak_options = {"leak_samples": 4, "attack_attempts": 2, "attack_steps": 10}
    compare.run_leak_test()
    wait(app, lambda: not window.runner.busy, what="the leak test")
    shot("6-compare")
    compare.mode_combo.setCurrentIndex(compare.mode_combo.findData("difference"))
    compare.heat_check.setChecked(False)
    shot("6b-compare-difference")

    window.go(6)
    export.export()
    wait(app, lambda: not window.runner.busy, what="the export")
    shot("7-export")

    if args.text_demo:  # the text-conditioned demo's Forget and Keep steps (concept texts, example images, presets)
        window.go(0)
        for i in range(model.demo_list.count()):
            item = model.demo_list.item(i)
            if item.data(0x0100) == args.text_demo:
                model.demo_list.setCurrentItem(item)
                model._on_demo_activated(item)
        wait(app, lambda: state.summary is not None and state.summary.name == args.text_demo, what="the text model")
        window.go(1)
        forget.add_concept("circle")
        forget.anchor_edit.setText("a shape")
        examples = scratch / "examples"
        examples.mkdir()
        from concept_eraser.gui.fake_backend import _rng, _shape
        from concept_eraser.gui.images import to_qimage

        for i, colour in enumerate(("red", "blue", "green")):
            to_qimage(_shape(f"a {colour} circle", 64, _rng(i))).save(str(examples / f"{colour}-circle.png"))
        (examples / "notes.txt").write_text("not an image")
        forget.add_images(sorted(examples.iterdir()))
        shot("2b-forget-text")
        window.go(2)
        keep.apply_preset(keep.preset_combo.itemText(0))
        shot("3b-keep-text")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
