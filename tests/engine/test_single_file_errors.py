"""Single files: every bad input gives a one-line error that says what to do; pickled code never runs."""

import os

import pytest
import torch
from safetensors.torch import save_file

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.single_file import detect_architecture
from concept_eraser.spec import ModelSource, UserError


def _err(path, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_model(ModelSource(path=str(path), **kw))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _sd1_like(path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 4)},
              str(path))
    return path


def test_truncated_and_corrupt_safetensors(tmp_path):
    good = _sd1_like(tmp_path / "m.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2 + 60])
    assert "truncated" in _err(cut)
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(os.urandom(4096))
    assert "not a valid safetensors file" in _err(noise)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert "empty or truncated" in _err(empty)


def test_unknown_architecture(tmp_path):
    other = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(2, 2)}, str(other))
    assert "unknown architecture" in _err(other)


def test_detects_the_three_families():
    unet = ["model.diffusion_model.out.2.weight"]
    assert detect_architecture(unet + ["cond_stage_model.transformer.x"]) == "sd1"
    assert detect_architecture(unet + ["cond_stage_model.model.x"]) == "sd2"
    assert detect_architecture(unet + ["conditioner.embedders.0.transformer.x"]) == "sdxl"


def test_file_that_does_not_fit_the_shipped_configs_says_what_to_pass(tmp_path):
    msg = _err(_sd1_like(tmp_path / "m.safetensors"))
    assert "looks like SD1" in msg and "bundled sd1 configs" in msg and "--config-dir" in msg
    assert "--config-dir" in _err(_sd1_like(tmp_path / "m2.safetensors"), config_dir=str(tmp_path / "nowhere"))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode(marker)}, bad)
    assert "contains code" in _err(bad)
    assert not marker.exists()


def test_plain_ckpt_is_read_safely(tmp_path):
    ok = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.a": torch.zeros(1), "cond_stage_model.model.b": torch.zeros(1)}},
               ok)
    assert "SD2" in _err(ok), "a safe .ckpt is read and its architecture detected"
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert "not a model file" in _err(txt)
