"""Forget/retain inputs: image files and folders, validation, default retain rows, generated-image cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from concept_eraser.engine.catalog import demo_models
from concept_eraser.engine.inputs import image_files, load_images, resolve_inputs
from concept_eraser.engine.loading import load_model
from concept_eraser.spec import Concept, ForgetImage, JobContext, JobSpec, ModelSource, SampleRow, UserError
from concept_eraser.spec.runloop import run_blocking


def _png(path, size=(20, 12), mode="RGB", value=200):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).convert(mode).save(path)
    return path


def test_folder_and_files_resized_and_scaled(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.webp", size=(64, 64), value=0)
    (tmp_path / "notes.txt").write_text("not an image")
    files = image_files([str(tmp_path)])
    assert [f.name for f in files] == ["a.png", "b.webp"]
    x = load_images(files, size=16, channels=1)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[1], torch.full_like(x[1], -1.0))
    assert load_images(files, size=8, channels=3).shape == (2, 3, 8, 8)


def test_bad_files_named_in_one_line(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_images(image_files([str(tmp_path)]), 16, 3)
    msg = str(err.value)
    assert "\n" not in msg and "broken.png" in msg and "empty.jpg" in msg and "good.png" not in msg
    with pytest.raises(UserError, match="not found: .*missing.png"):
        image_files([str(tmp_path / "missing.png")])
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        image_files([str(tmp_path / "sub")])


@pytest.mark.skipif("digits" not in {m.name for m in demo_models() if m.available}, reason="digits not built")
def test_resolve_inputs_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    bundle = load_model("digits")
    _png(tmp_path / "three.png", size=(32, 32))
    spec = JobSpec(model=ModelSource(path="digits"), concepts=[Concept(label=3)],
                   forget_images=[ForgetImage(path=str(tmp_path / "three.png"))])
    inputs = run_blocking(resolve_inputs(bundle, spec, JobContext(), generate=2))
    assert [r.label for r in inputs.retain] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert inputs.images.shape == (3, 1, 16, 16) and inputs.image_items == [3, 3, 3]
    cached = list((tmp_path / "cache" / "generated").glob("*.npy"))
    assert len(cached) == 1
    again = run_blocking(resolve_inputs(bundle, spec, JobContext(), generate=2))
    assert torch.equal(again.images, inputs.images)
    spec2 = spec.model_copy(update={"retain": [SampleRow(label=5)]})
    assert [r.label for r in run_blocking(resolve_inputs(bundle, spec2, JobContext())).retain] == [5]
