"""Round trips on tiny SD 1.x, 2.x and SDXL runs: every format reloads and re-renders the edit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from concept_eraser import __version__
from concept_eraser.engine.apply import apply_job
from concept_eraser.engine.export import export_formats, export_job
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.weight_diff import apply_lora, flat_state
from concept_eraser.spec import JobContext, JobSpec, guarded, run_blocking

from .conftest import FAST, edit_names

FAMILIES = ["sd1", "sd2", "sdxl"]


def export(run, fmt, out, **options):
    result = run_blocking(guarded(export_job(run, fmt, out, JobContext(), {**FAST, **options})))
    assert result.ok, result.details
    return result.value


def header(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def check_metadata(meta: dict[str, str], fmt: str, base_sha: str) -> None:
    assert meta["concept_eraser.format"] == fmt
    assert meta["concept_eraser.version"] == __version__
    assert meta["concept_eraser.method"] == "esd-x"
    assert meta["concept_eraser.base_sha256"] == base_sha
    assert JobSpec.model_validate_json(meta["concept_eraser.job"]).method == "esd-x"
    assert json.loads(meta["concept_eraser.scores"])["loss"] == 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_full_exports_render_pixel_identical(runs, tmp_path, family):
    run = runs[family]
    sha = json.loads((run / "job.json").read_text())["model"]["sha256"]
    folder = export(run, "diffusers", tmp_path / "diffusers")
    assert folder["verify"]["pass"] and folder["verify"]["max_pixel_diff_uint8"] == 0
    files = sorted((tmp_path / "diffusers").rglob("*.safetensors"))
    assert files
    for f in files:
        check_metadata(header(f), "diffusers", sha)
    single = export(run, "single-file", tmp_path / "edit.safetensors")
    assert single["verify"]["pass"] and single["verify"]["max_pixel_diff_uint8"] == 0
    assert single["verify"]["configs"] == str(run / "model")  # tiny models: configs from the run's folder
    meta = header(tmp_path / "edit.safetensors")
    check_metadata(meta, "single-file", sha)
    assert meta["modelspec.architecture"].startswith("stable-diffusion")
    stored = json.loads((tmp_path / "edit.safetensors.verify.json").read_text())
    assert stored["verify"]["max_pixel_diff"] == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_delta_applies_to_the_base_exactly(runs, bases, tmp_path, family):
    run = runs[family]
    report = export(run, "delta", tmp_path / "d.safetensors")
    edited = load_model(str(run / "model"))
    assert report["tensors"] == len(edit_names(edited))
    assert report["verify"]["pass"] and report["verify"]["max_pixel_diff_uint8"] == 0
    tensors = load_file(str(tmp_path / "d.safetensors"))
    assert set(tensors) == set(edit_names(edited))
    result = run_blocking(guarded(apply_job(str(bases[family]), tmp_path / "d.safetensors", tmp_path / "applied",
                                            JobContext())))
    assert result.ok, result.details
    applied, want = flat_state(load_model(str(tmp_path / "applied"))), flat_state(edited)
    assert all(torch.equal(applied[k], want[k]) for k in want)


def test_delta_refuses_another_base(runs, bases, tmp_path):
    export(runs["sd1"], "delta", tmp_path / "d.safetensors")
    result = run_blocking(guarded(apply_job(str(bases["sd2"]), tmp_path / "d.safetensors", tmp_path / "x",
                                            JobContext())))
    assert result.status == "failed" and result.user_error
    assert "was made for the base with sha256" in result.error and "\n" not in result.error
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_at_full_rank_reproduces_a_low_rank_edit(runs, bases, tmp_path, family):
    report = export(runs[family], "lora", tmp_path / "l.safetensors", rank=4)
    lora = report["lora"]
    assert lora["energy_kept"] == pytest.approx(1.0, abs=1e-6)
    assert lora["modules"] == len(lora["layers"]) and not lora["skipped"]
    assert report["verify"]["max_pixel_diff_uint8"] <= 1
    assert "ssim_distance" in report["verify"] or report["verify"]["lpips"] is not None
    base, edited = load_model(str(bases[family])), flat_state(load_model(str(runs[family] / "model")))
    apply_lora(base, load_file(str(tmp_path / "l.safetensors")), 1.0)
    got = flat_state(base)
    for k in edited:
        torch.testing.assert_close(got[k], edited[k], atol=2e-6, rtol=0)
    meta = header(tmp_path / "l.safetensors")
    assert meta["ss_network_dim"] == "4" and meta["concept_eraser.format"] == "lora"


def test_lora_low_rank_keeps_the_reported_energy(runs, bases, tmp_path):
    report = export(runs["sd1"], "lora", tmp_path / "l1.safetensors", rank=1)
    base, edited = flat_state(load_model(str(bases["sd1"]))), flat_state(load_model(str(runs["sd1"] / "model")))
    total = kept = 0.0
    for layer in report["lora"]["layers"]:
        key = layer["name"] + ".weight"
        d = (edited[key].double() - base[key].double()).reshape(edited[key].shape[0], -1)
        s = torch.linalg.svdvals(d)
        share = float(s[0] ** 2 / (s**2).sum())
        assert layer["rank"] == 1 and layer["energy_kept"] == pytest.approx(share, rel=1e-6)
        total, kept = total + float((s**2).sum()), kept + float(s[0] ** 2)
    assert report["lora"]["energy_kept"] == pytest.approx(kept / total, rel=1e-6)
    assert report["lora"]["energy_kept"] < 0.999
    # scale 0 switches the erasure off: the base is unchanged
    base_model = load_model(str(bases["sd1"]))
    apply_lora(base_model, load_file(str(tmp_path / "l1.safetensors")), 0.0)
    assert all(torch.equal(v, base[k]) for k, v in flat_state(base_model).items())


def _target(key: str) -> str:
    """The module a converted diffusers LoRA key patches ('...attn2.processor.to_k_lora.up.weight' -> '...attn2.to_k')."""
    if ".processor." in key:
        head, tail = key.split(".processor.")
        return f"{head}.{tail.split('_lora')[0]}"
    return key.split(".lora")[0]


def test_kohya_names_are_what_loaders_read(runs, tmp_path):
    """SD 1.x: diffusers module names; SDXL: SGM names and lora_te1_/lora_te2_; diffusers' converter maps them back."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    export(runs["sd1"], "lora", tmp_path / "sd1.safetensors", rank=2)
    keys = set(load_file(str(tmp_path / "sd1.safetensors")))
    k = "lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert {f"{k}.lora_down.weight", f"{k}.lora_up.weight", f"{k}.alpha"} <= keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in keys  # LoCon (3x3 conv)
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(load_file(str(tmp_path / "sd1.safetensors")))
    modules = {n for n, _ in load_model(str(runs["sd1"] / "model")).pipe.components["unet"].named_modules()}
    unet_targets = {_target(k.removeprefix("unet.")) for k in converted if k.startswith("unet.")}
    assert unet_targets and unet_targets <= modules

    export(runs["sdxl"], "lora", tmp_path / "xl.safetensors", rank=2)
    keys = set(load_file(str(tmp_path / "xl.safetensors")))
    assert any(k.startswith("lora_unet_input_blocks_") and "_attn2_to_k.lora_down" in k for k in keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_1_mlp_fc1") for k in keys)


def test_export_formats_and_the_backend(runs, tmp_path):
    from concept_eraser.backend import LocalBackend

    backend = LocalBackend()
    sd = load_model(str(runs["sd1"] / "model")).summary
    assert [f.key for f in backend.export_formats(sd)] == ["diffusers", "single-file", "delta", "lora"]
    assert [f.options for f in export_formats(sd)][-1] == {"rank": 16}
    assert [f.key for f in export_formats(dataclasses.replace(sd, kind="ddpm"))] == ["diffusers"]
    job = backend.export(str(runs["sd1"]), "delta", str(tmp_path / "d.safetensors"), JobContext(), dict(FAST))
    result = run_blocking(guarded(job))
    assert result.ok and result.value["verify"]["pass"]


def test_single_file_verification_uses_shipped_configs_for_real_sd(tmp_path):
    """Real SD 1.x (the shipped unet config) verifies through the shipped configs; other sizes use the run's."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from concept_eraser.engine.export import single_file_config_dir
    from concept_eraser.resources import configs_dir

    f = tmp_path / "x.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(1),
               "cond_stage_model.transformer.text_model.final_layer_norm.bias": torch.zeros(1)}, str(f))
    real = json.loads((configs_dir() / "sd1" / "unet" / "config.json").read_text())
    assert single_file_config_dir(SimpleNamespace(unet=SimpleNamespace(config=real)), f, tmp_path / "m") is None
    tiny = {**real, "block_out_channels": [8, 16]}
    got = single_file_config_dir(SimpleNamespace(unet=SimpleNamespace(config=tiny)), f, tmp_path / "m")
    assert got == str(tmp_path / "m")
