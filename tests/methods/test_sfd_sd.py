"""SFD on a tiny Stable Diffusion (8x8 latents, 2-layer text encoder): the one-step generator's output,
the frozen teacher, resume, the prompt plan (vocabulary and templates), and one-step SD folders that
sample in one forward and load in plain diffusers with the saved one-step scheduler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from concept_eraser.engine.denoise import encode
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.one_step import generate, save_one_step
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
from concept_eraser.methods import get_method
from concept_eraser.methods.sfd import SFDConfig, SFDSettings, SFDTrainer
from concept_eraser.methods.sfd_prompts import sd_plan, vocabulary_captions
from concept_eraser.resources import models_dir
from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking
from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource
from concept_eraser.spec.runloop import UserError

from ..engine.tiny_sd import make_tiny_sd

S = SFDSettings(steps=3, batch=2, forget_batch=2, t_init=60, t_min=5, t_max=95, lr_g=1e-3, lr_f=1e-3, guidance=2.0)
RETAIN = ["a red circle", "a blue square"]
FORGET, OVERRIDE = ["a cat", "a photo of cat"], ["a dog", "a photo of dog"]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sfd-sd"))


def _trainer(bundle, s=S):
    return SFDTrainer(bundle, bundle.unet, s, retain=RETAIN, forget=FORGET, override=OVERRIDE)


def test_sd_generator_output_shape_range_and_frozen_teacher(sd_folder):
    b = load_model(str(sd_folder))
    before = {k: v.clone() for k, v in b.unet.state_dict().items()}
    tr = _trainer(b)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = generate(b, tr.gen, z, encode(b, ["a red circle", "a cat", None]), S.t_init, tr.sigma_init)
    assert x.shape == (3, 4, 8, 8) and torch.isfinite(x).all()
    assert x.abs().max() < 20  # x0 = (x_init - sqrt(1-a) eps)/sqrt(a): bounded by the noise scale
    for _ in range(2):
        tr.step()
    assert all(not p.requires_grad and p.grad is None for p in b.unet.parameters())
    assert all(torch.equal(before[k], v) for k, v in b.unet.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in tr.gen.state_dict().items())
    assert all(not p.requires_grad for p in b.text_encoder.parameters())


def test_sd_resume_gives_identical_weights(sd_folder, tmp_path):
    b = load_model(str(sd_folder))
    straight = _trainer(b, SFDSettings(**{**S.__dict__, "steps": 4}))
    run_blocking(straight.train(JobContext()))
    run_blocking(_trainer(b, SFDSettings(**{**S.__dict__, "steps": 2})).train(JobContext(), run_dir=tmp_path))
    second = _trainer(b, SFDSettings(**{**S.__dict__, "steps": 4}))
    run_blocking(second.train(JobContext(), run_dir=tmp_path, resume=True))
    assert second.step_done == 4
    for k, v in straight.gen.state_dict().items():
        assert torch.equal(v, second.gen.state_dict()[k]), k
    assert all(torch.equal(straight.ema[k], second.ema[k]) for k in straight.ema)


def test_sd_method_run_gives_a_one_step_model_that_samples_exports_and_loads_in_diffusers(sd_folder, tmp_path):
    b = load_model(str(sd_folder))
    method = get_method("sfd")
    spec = JobSpec(model=ModelSource(path=str(sd_folder)), concepts=[Concept(text="cat")],
                   anchor=Concept(text="dog"), retain=[SampleRow(prompt=p) for p in RETAIN], method="sfd")
    # gen_guidance 2: the classifier-free guided generator form (sd option), exported exactly to diffusers
    cfg = SFDConfig.smoke().model_copy(update={"t_init": 60, "t_min": 5, "t_max": 95, "gen_guidance": 2.0})
    method.check(b.summary, spec, cfg)
    run = UnlearnRun(bundle=b, spec=spec, ctx=JobContext(), run_dir=tmp_path / "run",
                     inputs=ForgetInputs(concepts=spec.concepts, anchor=spec.anchor, retain=spec.retain))
    (tmp_path / "run").mkdir()
    stats = run_blocking(method.run(run, cfg))
    assert stats["stage2_steps"] == 2 and b.meta["one_step"]["t_init"] == 60
    calls = []
    h = b.unet.register_forward_hook(lambda *a: calls.append(1))
    rows = [SampleRow(prompt="a cat"), SampleRow(prompt="a red circle")]
    grid = run_blocking(sample_grid(b, SamplingSpec(rows=rows, seeds=[0, 3], steps=30, batch_size=4), JobContext()))
    h.remove()
    assert grid.images.shape == (2, 2, 16, 16, 3) and len(calls) == 1
    out = save_one_step(b, b.unet, tmp_path / "model", 60, b.meta["one_step"]["sigma_init"],
                        guidance=b.meta["one_step"]["guidance"])
    loaded = load_model(str(out))
    assert loaded.meta["one_step"]["t_init"] == 60 and loaded.summary.default_steps == 1
    again = run_blocking(sample_grid(loaded, SamplingSpec(rows=rows, seeds=[0, 3], batch_size=4), JobContext()))
    assert np.array_equal(again.images, grid.images)
    # plain diffusers: the saved Euler ("trailing") scheduler, one step at t_init with the generator's own CFG
    # = the same images
    from diffusers import StableDiffusionPipeline

    g = loaded.meta["one_step"]["guidance"]
    assert g == 2.0
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    img = pipe("a cat", timesteps=[60], guidance_scale=g, latents=latents, output_type="np").images[0]
    assert np.abs(np.round(img * 255).astype(int) - grid.images[0, 1].astype(int)).max() <= 2


def test_sd_without_vocabulary_needs_retain_prompts():
    with pytest.raises(UserError, match="retain prompts"):
        sd_plan(None, "cat", "dog", [], ("{}",))
    plan = sd_plan(None, "cat", "dog", ["a cat and a red circle", "a blue square"], ("{}", "a {}"))
    assert plan.forget == ["cat", "a cat"] and plan.override == ["dog", "a dog"]
    assert "a cat and a red circle" not in plan.retain and "a dog" in plan.retain


def test_shapes_vocabulary_plan_pairs_each_forget_caption_with_its_override():
    voc = json.loads((models_dir() / "shapes" / "concept_eraser.json").read_text())["vocabulary"]
    plan = sd_plan(voc, "stripy", "solid", [], ("{}",))  # a synonym finds the base word
    pairs = dict(zip(plan.forget, plan.override, strict=True))
    assert pairs["a red striped circle"] == "a red solid circle"
    assert pairs["a banded blue star"] == "a solid blue star"
    assert pairs["green box with stripes"] == "green box solid"
    assert not any("strip" in p or "banded" in p for p in plan.retain)
    assert len(plan.everything) == len(vocabulary_captions(voc))
    with pytest.raises(UserError, match="anchor"):
        sd_plan(voc, "striped", "red", [], ("{}",))


def test_shipped_shapes_onestep_is_found_by_stage2_and_samples_in_one_step():
    folder = models_dir() / "shapes-onestep"
    if not (folder / "model_index.json").is_file() or not (models_dir() / "shapes" / "model_index.json").is_file():
        pytest.skip("shapes / shapes-onestep not built")
    from concept_eraser.methods.sfd import load_stage1

    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 8 * 2**20, size
    teacher = load_model("shapes")
    gen, fake, meta = load_stage1(teacher, "auto")
    assert meta["teacher_sha256"] == teacher.summary.sha256 and meta["one_step"]["t_init"] > 0
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    one = load_model(str(folder))
    grid = run_blocking(sample_grid(one, SamplingSpec(rows=[SampleRow(prompt="a red solid circle")], seeds=[0, 1]),
                                    JobContext()))
    assert grid.images.shape == (1, 2, 32, 32, 3)
