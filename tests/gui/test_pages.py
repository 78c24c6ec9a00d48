"""Each page against the FakeBackend: state -> spec, validation messages, Next enabled/disabled."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from concept_eraser.gui.fake_backend import FakeBackend
from concept_eraser.gui.images import to_qimage
from concept_eraser.gui.widgets.config_form import ConfigFormWidget, ScientificSpinBox

from .conftest import load_demo


def test_model_page_lists_demos_and_shows_summary(qtbot, window):
    page = window.pages[0]
    names = [page.demo_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(page.demo_list.count())]
    assert names == ["digits", "shapes"]
    page.dtype_combo.setCurrentText("float32")
    load_demo(qtbot, window, "shapes")
    assert page.fields["kind"].text() == "sd"
    assert page.fields["conditioning"].text() == "text prompts"
    assert "64×64" in page.fields["size"].text() and "float32" in page.fields["size"].text()
    assert page.fields["sha256"].toolTip() == window.state.summary.sha256
    assert page.spec_part()["device"] == {"device": "auto", "dtype": "float32"}


def test_model_page_single_file_drop_and_bad_files(qtbot, window, tmp_path):
    page = window.pages[0]
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    page.drop_paths([tmp_path / "notes.txt"])
    assert "notes.txt is not a model" in page.status_label.text()
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        page.drop_paths([weights])
    assert window.state.summary.single_file and "(single file)" in page.fields["source"].text()
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        page.load(window.state.source.model_copy(update={"path": str(tmp_path / "missing"), "sha256": None}))
    assert "Could not load: model not found" in page.status_label.text()


def test_forget_page_class_picker(qtbot, window):
    load_demo(qtbot, window, "digits")
    page = window.pages[1]
    window.go(1)
    assert page.stack.currentIndex() == 1 and page.class_list.count() == 10
    assert page.problem() == "Tick at least one class to forget."
    page.set_class_checked(3)
    page.set_class_checked(5)
    page.anchor_combo.setCurrentIndex(page.anchor_combo.findData(3))
    assert "anchor cannot be" in page.problem() and not window.next_button.isEnabled()
    page.anchor_combo.setCurrentIndex(page.anchor_combo.findData(0))
    assert page.problem() == "" and window.next_button.isEnabled()
    part = page.spec_part()
    assert part["concepts"] == [{"label": 3}, {"label": 5}] and part["anchor"] == {"label": 0}


def test_forget_page_text_concepts_and_images(qtbot, window, tmp_path):
    load_demo(qtbot, window, "shapes")
    page = window.pages[1]
    assert page.stack.currentIndex() == 0
    assert "Add at least one concept" in page.problem()
    page.concept_edit.setText("  circle ")
    page.add_concept_from_edit()
    page.add_concept("circle")  # no duplicates
    page.anchor_edit.setText("a shape")
    good = tmp_path / "red.png"
    img = to_qimage(np.full((20, 30, 3), (200, 10, 10), np.uint8))
    assert img.save(str(good))
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    fake_png = tmp_path / "broken.png"
    fake_png.write_bytes(b"not a png")
    assert page.add_images([good, bad, fake_png]) == ["notes.txt", "broken.png"]
    assert "notes.txt, broken.png" in page.bad_label.text()
    assert page.image_list.count() == 1 and "20" in page.image_list.item(0).toolTip()
    part = page.spec_part()
    assert part["concepts"] == [{"text": "circle"}] and part["anchor"] == {"text": "a shape"}
    assert part["forget_images"][0]["path"] == str(good) and len(part["forget_images"][0]["sha256"]) == 64
    page.image_list.item(0).setSelected(True)
    page.remove_images_button.click()
    assert page.image_list.count() == 0


def test_keep_page_presets_validation_and_grid(qtbot, window):
    load_demo(qtbot, window, "digits")
    window.pages[1].set_class_checked(3)
    page = window.pages[2]
    assert "retain prompt" in page.problem()
    page.retain_edit.setText("12")
    page.add_from_edit()
    assert "not a class of this model" in page.input_error.text() and not page.rows()
    page.apply_preset("All other digits")
    assert [r.label for r in page.rows()] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    page.first_seed.setValue(10)
    page.seed_count.setValue(2)
    part = page.spec_part()
    assert part["sampling"]["seeds"] == [10, 11] and part["sampling"]["rows"][0] == {"label": 3}
    assert part["sampling"]["guidance"] == 1.5 and "10 rows × 2 seeds" in page.size_label.text()

    load_demo(qtbot, window, "shapes")
    assert page.rows() == [] and page.preset_combo.count() == 2
    page.apply_preset("Other shapes")
    assert [r.prompt for r in page.rows()] == ["a red square", "a blue triangle", "a green circle"]
    page.retain_list.item(0).setText("a red square, large")
    assert page.rows()[0].prompt == "a red square, large"


def test_method_page_offers_fitting_methods_with_a_generated_form(qtbot, window):
    load_demo(qtbot, window, "digits")
    page = window.pages[3]
    enabled = {page.method_list.item(i).data(Qt.ItemDataRole.UserRole): bool(page.method_list.item(i).flags()
               & Qt.ItemFlag.ItemIsEnabled) for i in range(page.method_list.count())}
    assert enabled == {"esd-x": True, "ga": True, "sdxl-only": False}
    assert "does not fit" in page.method_list.item(2).text()
    assert "Gandikota" in page.description.text() and "Estimate" in page.description.text()
    # the selected method's measured memory sits beside its time estimate, and follows the selection
    text = page.description.text()
    assert ("<b>Memory:</b> peak RAM of a whole run (CPU, float32, measured): 1000 MiB on the digits demo (the method "
            "adds 150 MiB), 1100 MiB on the shapes demo") in text
    assert "<b>Full-size models (estimated from parameter counts):</b> the model&#x27;s weights + 4 bytes" in text
    page.select("ga")
    assert "900 MiB on the digits demo (the method adds 60 MiB)" in page.description.text()
    assert "1100 MiB" not in page.description.text() and "Full-size" not in page.description.text()
    page.select("esd-x")
    form = page.form
    assert isinstance(form.editors["steps"], QSpinBox) and form.editors["steps"].maximum() == 5000
    assert isinstance(form.editors["learning_rate"], ScientificSpinBox)
    assert form.editors["learning_rate"].minimum() > 0 and form.editors["learning_rate"].value() == 1e-5
    assert isinstance(form.editors["negative_guidance"], QDoubleSpinBox)
    assert isinstance(form.editors["train_method"], QComboBox) and form.editors["train_method"].count() == 3
    assert isinstance(form.editors["use_ema"], QCheckBox)
    assert form.editors["steps"].toolTip() == "Optimizer steps.\nAllowed: 1 to 5000"
    assert form.advanced.rowCount() == 2 and form.basic.rowCount() == 4
    assert not form.advanced_box.isVisibleTo(form)
    form.advanced_button.click()
    assert form.advanced_box.isVisibleTo(form)
    form.set_values({"steps": 7, "train_method": "full", "use_ema": True})
    part = page.spec_part()
    assert part["method"] == "esd-x"
    assert part["method_config"] == {"steps": 7, "learning_rate": 1e-5, "negative_guidance": 1.0, "train_method": "full",
                                     "use_ema": True, "fail_at_step": -1}
    page.select("ga")  # switching keeps each method's edits
    assert page.spec_part()["method"] == "ga"
    assert "needs retain prompts" in page.problem()
    page.select("esd-x")
    assert page.form.values()["steps"] == 7


def test_config_form_handles_refs_and_strings(qtbot):
    schema = {"properties": {"mode": {"$ref": "#/$defs/Mode", "default": "b"}, "name": {"type": "string", "default": "x"},
                             "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5}},
              "$defs": {"Mode": {"enum": ["a", "b"], "type": "string"}}}
    form = ConfigFormWidget()
    qtbot.addWidget(form)
    form.set_schema(schema)
    assert form.values() == {"mode": "b", "name": "x", "ratio": 0.5}
    assert not form.advanced_button.isVisibleTo(form)


def test_every_fake_card_schema_builds_a_form(qtbot):
    form = ConfigFormWidget()
    qtbot.addWidget(form)
    for card in FakeBackend().methods():
        form.set_schema(card.config_schema, card.defaults)
        assert form.values() == card.defaults


def test_qimage_keeps_its_buffer():
    a = np.zeros((4, 5, 3), np.uint8)
    a[1, 2] = (255, 0, 0)
    img = to_qimage(a[:, :, :])
    del a
    assert isinstance(img, QImage) and img.width() == 5 and img.pixelColor(2, 1).red() == 255


def test_keep_page_keeps_job_file_seeds_and_sampling_fields(qtbot, window):
    from concept_eraser.spec.jobspec import JobSpec

    load_demo(qtbot, window, "digits")
    window.pages[1].set_class_checked(3)
    keep = window.pages[2]
    spec = JobSpec.model_validate({"model": {"path": "digits"}, "concepts": [{"label": 3}], "retain": [{"label": 1}],
                                   "sampling": {"rows": [{"label": 3}, {"label": 1}], "seeds": [4, 17, 42],
                                                "batch_size": 8, "negative_prompt": "", "height": 32, "width": 32}})
    keep.apply_spec(spec)
    part = keep.spec_part()["sampling"]
    assert part["seeds"] == [4, 17, 42] and part["batch_size"] == 8 and part["height"] == 32
    assert "seeds 4, 17, 42 from the job file" in keep.size_label.text()
    keep.seed_count.setValue(2)  # the user takes over
    assert keep.spec_part()["sampling"]["seeds"] == [4, 5]


def test_pages_tell_when_the_engine_lacks_descriptors(qtbot, window):
    class PartialBackend:  # e.g. the real engine before methods() lands
        def demo_models(self):
            return FakeBackend().demo_models()

    window.state.set_backend(PartialBackend())
    assert window.pages[3].description.text() == "The engine offers no unlearning methods yet."
    assert window.pages[0].demo_list.count() == 2  # judges are not offered as models


def test_drop_images_and_model_files(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    load_demo(qtbot, window, "shapes")
    forget = window.pages[1]
    good = tmp_path / "a.png"
    to_qimage(np.zeros((8, 8, 3), np.uint8)).save(str(good))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(good)), QUrl.fromLocalFile(str(tmp_path / "b.txt"))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    forget.image_list.dropEvent(event)
    assert forget.image_list.paths() == [str(good)]
    assert "b.txt" in forget.bad_label.text()
    model = window.pages[0]
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"1234")
    mime2 = QMimeData()
    mime2.setUrls([QUrl.fromLocalFile(str(weights))])
    with qtbot.waitSignal(window.runner.done, timeout=5000):
        model.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime2, Qt.MouseButton.LeftButton,
                                   Qt.KeyboardModifier.NoModifier))
    assert window.state.summary.single_file and window.state.source.path == str(weights)


def test_scientific_spin_box_accepts_typed_exponents_and_steps_by_factors(qtbot):
    spin = ScientificSpinBox()
    qtbot.addWidget(spin)
    spin.setRange(1e-12, 0.01)
    spin.setValue(1e-5)
    assert spin.text() == "1e-05"
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "3e-4")
    spin.interpretText()
    assert spin.value() == 3e-4
    spin.stepBy(1)
    assert spin.value() == 6e-4
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "0.5")  # above the maximum: not taken
    assert spin.validate("0.5", 0)[0] != QValidator.State.Acceptable


def test_clicking_and_activating_a_demo_loads_it_once(qtbot, window):
    page = window.pages[0]
    item = page.demo_list.item(0)
    started = []
    window.runner.started.connect(started.append)
    page._on_demo_activated(item)
    page._on_demo_activated(item)
    qtbot.waitUntil(lambda: window.state.summary is not None, timeout=5000)
    assert started == ["load"] and not window.last_message


def test_config_form_optional_fields_have_an_auto_box(qtbot):
    schema = {"properties": {
        "lr": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1.0}, {"type": "null"}], "default": None},
        "params": {"anyOf": [{"enum": ["kv", "full"], "type": "string"}, {"type": "null"}], "default": None},
        "clip": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}], "default": 1.0}}}
    form = ConfigFormWidget()
    qtbot.addWidget(form)
    form.set_schema(schema)
    assert form.values() == {"lr": None, "params": None, "clip": 1.0}
    assert not form.editors["lr"].isEnabled() and form.editors["clip"].isEnabled()
    assert form.editors["lr"].text() == "automatic" and form.editors["params"].currentText() == "automatic"
    assert "params" not in form.auto_checks  # an optional enum has an "automatic" item instead
    form.set_values({"lr": 1e-4, "params": "full", "clip": None})
    assert form.values() == {"lr": 1e-4, "params": "full", "clip": None}
    form.auto_checks["lr"].setChecked(True)
    assert form.values()["lr"] is None


def test_every_real_method_card_round_trips_through_the_form(qtbot):
    pytest.importorskip("torch")
    from concept_eraser.methods import cards, get_method

    form = ConfigFormWidget()
    qtbot.addWidget(form)
    for card in cards():
        form.set_schema(card.config_schema, card.defaults)
        values = form.values()
        get_method(card.info.key).parse_config(values)  # what the engine does with the wizard's config
        assert values == card.defaults, card.info.key


def test_list_settings_are_edited_one_item_a_line(qtbot):
    from pydantic import Field

    from concept_eraser.spec.registry import MethodConfig

    class ListConfig(MethodConfig):
        words: tuple[str, ...] = Field(("a {}", "a {}, drawn"), description="Templates, commas allowed.")
        counts: list[int] = Field([1, 2], description="Numbers.")

    form = ConfigFormWidget()
    qtbot.addWidget(form)
    form.set_schema(ListConfig.model_json_schema(), ListConfig().model_dump(mode="json"))
    assert form.values() == {"words": ["a {}", "a {}, drawn"], "counts": [1, 2]}
    form.editors["words"].setPlainText("x {}\n\n  y {}, z  \n")
    form.editors["counts"].setPlainText("3\nfour")
    values = form.values()
    assert values["words"] == ["x {}", "y {}, z"]
    assert values["counts"] == [3, "four"]  # left for the config's validation to name
    assert ListConfig.model_validate({**values, "counts": [3]}).words == ("x {}", "y {}, z")
