"""The digits demo (DDPM: only a diffusers folder) and the CLI's export/apply commands."""

from __future__ import annotations

import json

import pytest
import torch

from concept_eraser.cli import main
from concept_eraser.engine.catalog import demo_models
from concept_eraser.engine.export import export_job
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.unlearn_job import save_model
from concept_eraser.spec import Concept, JobContext, JobSpec, ModelSource, SampleRow, guarded, run_blocking

from .conftest import FAST


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    if "digits" not in {m.name for m in demo_models() if m.available}:
        pytest.skip("digits demo model is not built")
    run = tmp_path_factory.mktemp("digits-run")
    bundle = load_model("digits")
    with torch.no_grad():
        weight = bundle.unet.conv_in.weight
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    save_model(bundle, run / "model")
    spec = JobSpec(model=ModelSource(path="digits", sha256=load_model("digits").summary.sha256),
                   concepts=[Concept(label=3)], retain=[SampleRow(label=1)], method="esd-x")
    (run / "job.json").write_text(spec.to_json())
    return run


def test_ddpm_exports_as_a_diffusers_folder_only(digits_run, tmp_path):
    result = run_blocking(guarded(export_job(digits_run, "diffusers", tmp_path / "d", JobContext(), FAST)))
    assert result.ok, result.details
    v = result.value["verify"]
    assert v["pass"] and v["max_pixel_diff_uint8"] == 0 and v["cells"] == 4
    assert (tmp_path / "d" / "concept_eraser.json").is_file()
    for fmt in ("single-file", "delta", "lora"):
        result = run_blocking(guarded(export_job(digits_run, fmt, tmp_path / "x.safetensors", JobContext(), FAST)))
        assert result.status == "failed" and "only as a diffusers folder" in result.error
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_export_and_apply(runs, bases, tmp_path, capsys, monkeypatch):
    import concept_eraser.engine.export as export

    monkeypatch.setattr(export, "verify_sampling", _fast(export.verify_sampling))
    out = tmp_path / "erase.safetensors"
    assert main(["export", str(runs["sd1"]), "--format", "lora", "--rank", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rank 2:" in text and "energy kept 100.00%" in text and "max pixel diff" in text
    assert json.loads((tmp_path / "erase.safetensors.verify.json").read_text())["lora"]["rank"] == 2
    assert main(["export", str(runs["sd1"]), "--format", "lora", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["apply", str(bases["sd1"]), str(out), "--scale", "0.5", "--out", str(tmp_path / "half")]) == 0
    assert "scale 0.5" in capsys.readouterr().out
    assert (tmp_path / "half" / "model_index.json").is_file()


def _fast(real):
    def verify_sampling(bundle, spec, options):
        return real(bundle, spec, {**FAST, **options})

    return verify_sampling
