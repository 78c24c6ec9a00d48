"""A real short esd-x erase of "striped" on the shapes demo, exported as a LoRA: applied to the base it
makes fewer striped images than the base (judged by the shapes judge)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from concept_eraser.demo.shapes_data import COLOURS, SHAPES, caption
from concept_eraser.engine.catalog import demo_models
from concept_eraser.engine.export import export_job, render
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.unlearn_job import unlearn_job
from concept_eraser.engine.weight_diff import apply_lora
from concept_eraser.resources import judges_dir
from concept_eraser.spec import (
    Concept,
    JobContext,
    JobSpec,
    ModelSource,
    SampleRow,
    SamplingSpec,
    guarded,
    run_blocking,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("shapes" not in {m.name for m in demo_models() if m.available}
                       or not (judges_dir() / "shapes-judge.safetensors").is_file(),
                       reason="shapes demo model or judge is not built"),
]


def striped_rate(bundle, judge) -> float:
    spec = SamplingSpec(rows=[SampleRow(prompt=caption(s, c, "striped")) for s in SHAPES for c in COLOURS],
                        seeds=[0, 1], steps=10, batch_size=64)
    grid = run_blocking(render(bundle, spec, JobContext()))
    images = grid.images.reshape(-1, *grid.images.shape[2:])
    return float((judge.predict(images)["texture"] == judge.class_names["texture"].index("striped")).mean())


def test_lora_of_a_real_erase_reduces_the_concept(tmp_path, monkeypatch):
    from concept_eraser.demo.shapes_judge import load_shapes_judge

    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text="striped")], method="esd-x",
                   method_config={"steps": 15, "batch": 2, "rollout_steps": 8, "lr": 5e-3}, seed=0,
                   sampling=SamplingSpec(rows=[SampleRow(prompt="striped")], seeds=[0], steps=2))
    result = run_blocking(guarded(unlearn_job(spec, JobContext(), tmp_path / "run", samples=0)))
    assert result.ok, result.details
    report = run_blocking(guarded(export_job(tmp_path / "run", "lora", tmp_path / "striped.safetensors",
                                             JobContext(), {"rank": 4, "seeds": [0, 1], "verify_steps": 5})))
    assert report.ok, report.details
    lora = report.value["lora"]
    assert 0.5 < lora["energy_kept"] <= 1.0 and lora["modules"] > 0
    judge = load_shapes_judge()
    base = load_model("shapes")
    before = striped_rate(base, judge)
    apply_lora(base, load_file(str(tmp_path / "striped.safetensors")), 1.0)
    after = striped_rate(base, judge)
    assert after < before, (before, after)
