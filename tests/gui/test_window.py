"""MainWindow end to end on the FakeBackend: navigation, a full run, cancel, failure, resume, close, job files."""

from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication

from concept_eraser.gui.main_window import MainWindow
from concept_eraser.spec.jobspec import load_job

from .conftest import fill_digits, load_demo, make_window


def run_to_end(qtbot, window: MainWindow) -> None:
    run = window.pages[4]
    assert window.go(4)
    with qtbot.waitSignal(window.runner.done, timeout=10000) as blocker:
        assert run.start()
    assert blocker.args[1].ok, blocker.args[1].error


def test_window_opens_fast_and_backend_loads_behind(qtbot):
    t0 = time.monotonic()
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert time.monotonic() - t0 < 1.0
    assert "Loading PyTorch" in window.status_label.text()
    assert not window.next_button.isEnabled()
    assert "PyTorch" in window.problem_label.text()


def test_next_follows_completeness(qtbot, window):
    assert not window.next_button.isEnabled() and "Load a model" in window.problem_label.text()
    assert not window.go(1)  # the sidebar refuses unreachable steps too
    load_demo(qtbot, window, "digits")
    assert window.next_button.isEnabled()
    window.next_button.click()
    assert window.stack.currentIndex() == 1
    assert not window.next_button.isEnabled() and "class" in window.problem_label.text()
    window.pages[1].set_class_checked(3)
    assert window.next_button.isEnabled()
    window.back_button.click()
    assert window.stack.currentIndex() == 0


def test_full_run_compare_leak_test_and_export(qtbot, window, tmp_path):
    fill_digits(qtbot, window, steps=25)
    spec = window.build_spec()
    assert spec.model.path == "digits" and spec.model.sha256
    assert [c.label for c in spec.concepts] == [3]
    assert [r.label for r in spec.sampling.rows] == [3, 1, 7] and spec.sampling.seeds == [0, 1, 2]
    assert spec.method == "esd-x" and spec.method_config["steps"] == 25
    run_to_end(qtbot, window)
    run = window.pages[4]
    assert run.progress_bar.value() == run.progress_bar.maximum()
    assert len(run.loss_plot.points) == 25
    assert run.first_previews.title == "start (step 0)" and run.previews.title == "latest (step 25)"
    out = window.state.outcome
    assert (Path(out.run_dir) / "job.json").is_file()
    assert load_job(Path(out.run_dir) / "job.json") == spec
    assert window.state.recent_runs() == [run.run_dir]

    assert window.go(5)
    compare = window.pages[5]
    assert compare.score_table.rowCount() == 2 and compare.heat_check.isEnabled()
    for mode in ("side", "toggle", "slider", "difference"):
        compare.mode_combo.setCurrentIndex(compare.mode_combo.findData(mode))
        assert compare.compare.grab().width() > 100
    compare.compare.toggle_cell(0, 1)
    assert (0, 1) in compare.compare.flipped
    compare.zoom_slider.setValue(128)
    assert compare.compare.sizeHint().width() > 3 * 128
    from PySide6.QtCore import Qt
    qtbot.keyClick(compare.compare, Qt.Key.Key_Minus, Qt.KeyboardModifier.ControlModifier)
    assert compare.zoom_slider.value() == 120 and compare.compare.zoom == 120
    qtbot.keyClick(compare.compare, Qt.Key.Key_T)
    assert len(compare.compare.flipped) == 3 * 3 - 1  # all flipped, except the one flipped before
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        assert compare.run_leak_test()
    assert compare.leak_table.rowCount() == 3 and "probes" in compare.leak_status.text()

    assert window.go(6)
    export = window.pages[6]
    assert [f.key for f in export.formats] == ["diffusers", "delta"]
    dest = tmp_path / "exported"
    export.dest_edit.setText(str(dest))
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        assert export.export()
    assert export.verification["reloaded"] is True
    assert "Verified" in export.result_label.text() and (dest / "model_index.json").is_file()


def test_cancel_run_then_resume(qtbot):
    window = make_window(qtbot, step_delay=0.01)
    fill_digits(qtbot, window, steps=400)
    run = window.pages[4]
    window.go(4)
    assert run.start()
    assert run.cancel_button.isEnabled() and not run.start_button.isEnabled()
    qtbot.waitUntil(lambda: len(run.loss_plot.points) >= 25, timeout=10000)
    assert "ETA" in run.eta_label.text()
    with qtbot.waitSignal(window.runner.done, timeout=5000) as blocker:
        run.cancel_button.click()
    assert blocker.args[1].status == "cancelled"
    assert window.state.outcome is None and not window.next_button.isEnabled()
    assert run.resumable and run.resume_button.isEnabled()
    ckpt = json.loads((Path(run.run_dir) / "checkpoint.json").read_text())["step"]
    window.pages[3].form.set_values({"steps": ckpt + 5})  # finish quickly
    with qtbot.waitSignal(window.runner.done, timeout=10000) as blocker:
        assert run.resume()
    assert blocker.args[1].ok
    assert run.loss_plot.points[0][0] == ckpt + 1  # resumed, not restarted
    assert window.next_button.isEnabled()


def test_failed_run_shows_one_line_and_copies_details(qtbot, window):
    fill_digits(qtbot, window, steps=20)
    window.pages[3].form.set_values({"fail_at_step": 4})
    run = window.pages[4]
    window.go(4)
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        run.start()
    assert run.error_row.isVisibleTo(run)
    assert run.error_label.text() == "RuntimeError: fake failure at step 4 (as asked)"
    run.copy_details_button.click()
    assert "Traceback" in QGuiApplication.clipboard().text()
    assert window.state.outcome is None


def test_second_job_refused_while_running(qtbot):
    window = make_window(qtbot, step_delay=0.01)
    fill_digits(qtbot, window, steps=300)
    window.go(4)
    assert window.pages[4].start()
    assert not window.pages[0].load(window.state.source)
    assert "still running" in window.last_message
    window.runner.cancel()
    assert window.runner.wait_done(5)


def test_close_during_run_asks_cancels_and_waits(qtbot):
    window = make_window(qtbot, step_delay=0.01)
    fill_digits(qtbot, window, steps=1000)
    window.go(4)
    window.pages[4].start()
    qtbot.waitUntil(lambda: len(window.pages[4].loss_plot.points) > 2, timeout=5000)
    asked = []
    window.ask = lambda title, text: asked.append(text) or False
    assert not window.close()  # said no: keeps running
    assert window.runner.busy and asked
    window.ask = lambda title, text: True
    t0 = time.monotonic()
    assert window.close()
    assert not window.runner.busy and time.monotonic() - t0 < 2
    assert window.runner.last_result.status == "cancelled"


def test_geometry_is_persisted(qtbot, tmp_path):
    window = make_window(qtbot)
    window.resize(640, 480)
    window.close()
    settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "concept_eraser", "concept_eraser")
    assert str(tmp_path) in settings.fileName()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.size().width() == 640 and again.size().height() == 480


def test_job_file_save_and_reopen(qtbot, window, tmp_path):
    fill_digits(qtbot, window, steps=33)
    window.pages[1].anchor_combo.setCurrentIndex(window.pages[1].anchor_combo.findData(8))
    window.pages[3].seed.setValue(5)
    spec = window.build_spec()
    for name in ("job.json", "job.toml"):
        path = window.save_job(tmp_path / name)
        assert path and load_job(path) == spec
    other = make_window(qtbot)
    load_demo(qtbot, other, "shapes")
    assert other.open_job(tmp_path / "job.toml")
    qtbot.waitUntil(lambda: other.state.summary is not None and other.state.summary.name == "digits", timeout=5000)
    assert other.build_spec() == spec


def test_bad_job_file_is_named(qtbot, window, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert window.open_job(bad) is None
    assert "broken.json is not valid JSON" in window.last_message


def test_settings_dialog_and_recent_runs_menu(qtbot, window, tmp_path):
    from concept_eraser.gui.main_window import SettingsDialog

    dialog = SettingsDialog(window.state, window)
    qtbot.addWidget(dialog)
    dialog.preview_spin.setValue(7)
    dialog.accept()
    assert window.state.new_context().preview_every == 7
    fill_digits(qtbot, window, steps=12)
    run_to_end(qtbot, window)
    window._fill_recent()
    actions = window.recent_menu.actions()
    assert [a.text() for a in actions] == [window.pages[4].run_dir]
    load_demo(qtbot, window, "shapes")
    actions[0].trigger()  # reopens that run's job file: model, concepts, method, settings
    qtbot.waitUntil(lambda: window.state.summary is not None and window.state.summary.name == "digits", timeout=5000)
    assert window.pages[1].checked_classes() == [3] and window.pages[3].form.values()["steps"] == 12


def test_interrupted_run_resumes_after_reopening_its_job_file(qtbot, tmp_path):
    first = make_window(qtbot, step_delay=0.01)
    fill_digits(qtbot, first, steps=400)
    run = first.pages[4]
    first.go(4)
    run.start()
    qtbot.waitUntil(lambda: len(run.loss_plot.points) >= 15, timeout=10000)
    with qtbot.waitSignal(first.runner.done, timeout=5000):
        run.cancel()
    run_dir = run.run_dir
    first.close()
    second = make_window(qtbot)  # a later session
    second.open_job(Path(run_dir) / "job.json")
    qtbot.waitUntil(lambda: second.state.summary is not None, timeout=5000)
    again = second.pages[4]
    assert again.resumable and again.run_dir == run_dir and again.resume_button.isEnabled()


def test_failed_load_shows_error_with_details(qtbot, window, tmp_path):
    from concept_eraser.spec.jobspec import ModelSource

    with qtbot.waitSignal(window.runner.done, timeout=5000):
        window.pages[0].load(ModelSource(path=str(tmp_path / "nope")))
    assert window.error_label.isVisibleTo(window) and "model not found" in window.error_label.text()
    window.copy_details_button.click()
    assert "Traceback" in QGuiApplication.clipboard().text()
    load_demo(qtbot, window, "digits")
    assert not window.error_label.isVisibleTo(window)


def test_loading_another_model_goes_back_to_the_first_open_step(qtbot, window):
    fill_digits(qtbot, window, steps=5)
    run_to_end(qtbot, window)
    assert window.go(5)
    load_demo(qtbot, window, "shapes")
    assert window.stack.currentIndex() == 1 and "concept" in window.problem_label.text()


def test_resume_keeps_the_run_folders_job_file_and_samples_reach_the_backend(qtbot):
    """On resume the engine compares the folder's job.json with the job: the GUI must not overwrite it first.
    The judged-samples setting is passed to an unlearn() that takes `samples`."""
    window = make_window(qtbot, step_delay=0.01)
    fill_digits(qtbot, window, steps=5)
    run = window.pages[4]
    window.go(4)
    calls, seen = [], []
    real = window.state.backend.unlearn

    def unlearn(spec, ctx, run_dir, resume=False, samples=100):
        calls.append((resume, samples))

        def job():  # what the engine finds in the folder when the job starts
            seen.append((Path(run_dir) / "job.json").read_text())
            return (yield from real(spec, ctx, run_dir, resume=resume))
        return job()

    window.state.backend.unlearn = unlearn
    window.state.settings.setValue("eval_samples", 7)
    with qtbot.waitSignal(window.runner.done, timeout=10000):
        assert run.start()
    job = Path(run.run_dir) / "job.json"
    job.write_text(job.read_text().replace('"esd-x"', '"esd-x" '))  # a marker the GUI must leave alone
    marked = job.read_text()
    with qtbot.waitSignal(window.runner.done, timeout=10000):
        assert run.start(resume=True)
    assert calls == [(False, 7), (True, 7)]
    assert seen[1] == marked
