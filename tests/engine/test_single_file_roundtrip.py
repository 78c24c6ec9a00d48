"""Export to one LDM-named .safetensors and load it back through diffusers' own single-file converters.

Tiny SD 1.x, SD 2.x (v-prediction, OpenCLIP-style) and SDXL folders are exported, reloaded offline with
load_model(ModelSource(path=file, config_dir=folder)) and must give pixel-identical same-seed grids.
"""

import json
import struct

import numpy as np
import pytest
import torch

from concept_eraser.engine.ldm_convert import diffusers_to_ldm, save_single_file
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.spec import JobContext, ModelSource, SamplingSpec, UserError, run_blocking

from .tiny_sd import make_tiny_sd, make_tiny_sd2, make_tiny_sdxl

MAKERS = {"sd1": make_tiny_sd, "sd2": make_tiny_sd2, "sdxl": make_tiny_sdxl}
SPEC = SamplingSpec(rows=[{"prompt": "a red circle"}, {"prompt": "a blue dog"}, {}], seeds=[0, 5], steps=2,
                    guidance=3.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: make(tmp_path_factory.mktemp(name)) for name, make in MAKERS.items()}


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    files = {}
    for name, folder in folders.items():
        bundle = load_model(str(folder))
        files[name] = (bundle, save_single_file(bundle, out / f"tiny-{name}.safetensors", {"concept": "cat"}))
    return files


def _grid(bundle):
    return run_blocking(sample_grid(bundle, SPEC, JobContext())).images


def _same_weights(a, b):
    for name, module in a.components().items():
        sa, sb = module.state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k}"


def _header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl"])
def test_export_loads_back_pixel_identical(exported, folders, name):
    bundle, path = exported[name]
    again = load_model(ModelSource(path=str(path), config_dir=str(folders[name])))
    s, t = bundle.summary, again.summary
    assert t.single_file and (t.kind, t.prediction_type, t.resolution, t.parameters) == (
        s.kind, s.prediction_type, s.resolution, s.parameters)
    _same_weights(bundle, again)
    a, b = _grid(bundle), _grid(again)
    assert a.shape == (3, 2, 16, 16, 3)
    assert np.array_equal(a, b)


def test_layout_and_metadata(exported):
    keys = {name: set(_header(path)) for name, (_, path) in exported.items()}
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys["sd1"]
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys["sd1"]
    assert "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight" in keys["sd2"]
    assert "cond_stage_model.model.positional_embedding" in keys["sd2"]
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys["sdxl"]
    assert "conditioner.embedders.1.model.text_projection" in keys["sdxl"]
    assert "model.diffusion_model.label_emb.0.0.weight" in keys["sdxl"]
    header = _header(exported["sd2"][1])
    assert header["first_stage_model.encoder.mid.attn_1.q.weight"]["shape"] == [16, 16, 1, 1], "1x1 conv in LDM"
    assert header["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]["shape"] == [72, 24]
    meta = header["__metadata__"]
    assert meta["concept"] == "cat"
    assert (meta["modelspec.architecture"], meta["modelspec.prediction_type"]) == ("stable-diffusion-v2-768-v", "v")
    assert _header(exported["sdxl"][1])["__metadata__"]["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    sd1 = exported["sd1"][0]
    assert set(diffusers_to_ldm(sd1.pipe)) == keys["sd1"] - {"__metadata__"}, "pipelines export like bundles"


def test_ckpt_loads_identically(exported, folders, tmp_path):
    from safetensors.torch import load_file

    bundle, path = exported["sd1"]
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(path)), "global_step": 7}, ckpt)
    again = load_model(ModelSource(path=str(ckpt), config_dir=str(folders["sd1"])))
    assert np.array_equal(_grid(bundle), _grid(again))


def test_export_never_touches_the_source(exported, folders, tmp_path):
    bundle, path = exported["sd1"]
    with pytest.raises(UserError, match="inside the source model"):
        save_single_file(bundle, folders["sd1"] / "unet" / "x.safetensors")
    from_file = load_model(ModelSource(path=str(path), config_dir=str(folders["sd1"])))
    with pytest.raises(UserError, match="inside the source model"):
        save_single_file(from_file, path)
    with pytest.raises(UserError, match=r"\.safetensors"):
        save_single_file(bundle, tmp_path / "x.ckpt")
    with pytest.raises(UserError, match="text to text"):
        save_single_file(bundle, tmp_path / "x.safetensors", {"steps": 3})
    assert not list(tmp_path.iterdir()), "a refused export leaves nothing behind"
    target = tmp_path / "out" / "m.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"old")
    save_single_file(bundle, target)
    assert [p.name for p in target.parent.iterdir()] == ["m.safetensors"], "written in place of the old, no temp left"
    assert set(_header(target)) == set(_header(path))


def test_shipped_configs_are_used_without_config_dir(exported, tmp_path, monkeypatch):
    """No --config-dir: the detected architecture picks the shipped folder (the tiny weights do not fit it)."""
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    for name, shipped in (("sd1", "sd1"), ("sd2", "sd2-768-v"), ("sdxl", "sdxl")):
        with pytest.raises(UserError) as info:
            load_model(str(exported[name][1]))
        msg = str(info.value)
        assert f"the bundled {shipped} configs" in msg and "--config-dir" in msg and "\n" not in msg
    assert (tmp_path / "cache" / "clip-bpe" / "vocab.json").is_file()


@pytest.mark.parametrize(("name", "shipped"), [("sd1", "sd1"), ("sd2", "sd2-768-v"), ("sdxl", "sdxl")])
def test_offline_load_through_a_shipped_folder(exported, folders, tmp_path, monkeypatch, capsys, name, shipped):
    """The whole no---config-dir path (assembled folder + real CLIP vocabulary) with tiny stand-in configs."""
    import shutil

    res = tmp_path / "resources" / "configs" / shipped
    src = folders[name]
    for f in src.rglob("*.json"):
        if f.name not in ("vocab.json", "tokenizer.json"):  # configs only, like resources/configs
            (res / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, res / f.relative_to(src))
    monkeypatch.setenv("CONCEPT_ERASER_RESOURCES", str(tmp_path / "resources"))
    bundle, path = exported[name]
    again = load_model(str(path))
    _same_weights(bundle, again)
    assert len(again.tokenizer) == 49408, "the real CLIP vocabulary, built offline"
    if name == "sdxl":
        assert (again.tokenizer.pad_token, again.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert again.summary.prediction_type == bundle.summary.prediction_type
    from concept_eraser.cli import main

    assert main(["info", str(path), "--json"]) == 0, "the CLI needs no --config-dir"
    info = json.loads(capsys.readouterr().out)
    assert (info["single_file"], info["sha256"]) == (True, again.summary.sha256)
