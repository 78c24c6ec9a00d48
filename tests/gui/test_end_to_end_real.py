"""The whole wizard on the REAL engine (LocalBackend) and the bundled digits demo: load digits, forget class 3,
keep a preset, ESD-x with a few steps set in the settings form, run, compare, export a diffusers folder.

Kept short on purpose (3 optimizer steps of 2 roll-outs, 2 seeds, 2 judged samples per row); prints its duration.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from concept_eraser.gui.app import warmup_job
from concept_eraser.gui.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or not (ROOT / "resources" / "models" / "digits" / "model_index.json").is_file(),
    reason="needs torch and the built digits demo model",
)


def test_wizard_end_to_end_on_the_real_digits_demo(qtbot, tmp_path):
    t0 = time.perf_counter()
    window = MainWindow()
    qtbot.addWidget(window)
    window.ask = lambda title, text: True
    window.state.settings.setValue("eval_samples", 2)  # judged scores from 2 samples per row: fast, still real
    window.state.settings.setValue("preview_every", 1)
    window.start_backend(lambda: warmup_job(False))
    window.load_when_ready("digits")  # what `concept-eraser-gui --model digits` (make run) does
    qtbot.waitUntil(lambda: window.state.summary is not None, timeout=120000)
    assert type(window.state.backend).__name__ == "LocalBackend"
    assert window.state.summary.name == "digits"
    t_loaded = time.perf_counter()

    model, forget, keep, method, run, compare, export = window.pages
    assert window.go(1)
    forget.set_class_checked(3)
    assert window.go(2)
    presets = [keep.preset_combo.itemText(i) for i in range(keep.preset_combo.count())]
    assert "All other digits" in presets and any("1, 5, 7, 8" in p for p in presets)  # from engine/catalog.py
    keep.apply_preset(next(p for p in presets if "1, 5, 7, 8" in p))
    keep.seed_count.setValue(2)
    keep.steps.setValue(10)
    assert window.go(3)
    method.select("esd-x")
    method.form.set_values({"steps": 3, "batch": 2})
    assert not method.problem(), method.problem()
    assert window.go(4)

    with qtbot.waitSignal(window.runner.done, timeout=240000,
                          check_params_cb=lambda name, _r: name == "unlearn") as blocker:
        assert run.start()
    result = blocker.args[1]
    assert result.ok, f"{result.error}\n{result.details}"
    t_run = time.perf_counter()
    run_dir = Path(window.state.run_dir)
    assert json.loads((run_dir / "job.json").read_text())["method"] == "esd-x"
    assert (run_dir / "model" / "model_index.json").is_file()
    assert len(run.loss_plot.points) >= 1

    assert window.go(5)
    out = window.state.outcome
    assert out.before is not None and out.after is not None
    assert out.before.shape == out.after.shape == (5, 2)  # class 3 + four retain rows x 2 seeds
    assert compare.compare.before is out.before and compare.compare.after is out.after
    assert compare.score_table.rowCount() >= 3
    keys = {compare.score_table.item(i, 0).toolTip() for i in range(compare.score_table.rowCount())}
    assert "ssim_distance_retain" in keys and "train_seconds" in keys
    assert compare.heat_check.isEnabled()
    assert ("LPIPS" in compare.heat_check.text()) == ("lpips" in window.state.per_cell)
    compare.heat_check.setChecked(True)
    compare.compare.grab()  # paints the overlay (NaN cells on the forget row included)

    assert window.go(6)
    export.format_combo.setCurrentIndex(export.format_combo.findData("diffusers"))
    assert export.current_format().key == "diffusers"
    export.dest_edit.setText(str(tmp_path / "digits-without-3"))
    with qtbot.waitSignal(window.runner.done, timeout=240000,
                          check_params_cb=lambda name, _r: name == "export") as blocker:
        assert export.export()
    result = blocker.args[1]
    assert result.ok, f"{result.error}\n{result.details}"
    assert (tmp_path / "digits-without-3" / "model_index.json").is_file()
    assert export.result_label.text().startswith("✔ Verified"), export.result_label.text()
    t_end = time.perf_counter()
    print(f"\nend-to-end (real digits): engine+load {t_loaded - t0:.1f} s, run {t_run - t_loaded:.1f} s, "
          f"export {t_end - t_run:.1f} s, total {t_end - t0:.1f} s")
