"""AdvUnlearn on a tiny random Stable Diffusion: what it trains, its inner attack, its retain term, and the
plug-and-play text encoder. (The smoke config through the unlearn job on the shapes demo: test_contract.py.)"""

from __future__ import annotations

import pytest
import torch

from concept_eraser.engine import denoise
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
from concept_eraser.methods.advunlearn import (
    AdvUnlearn,
    AdvUnlearnConfig,
    adv_token_ids,
    apply_text_encoder,
    inner_attack,
    read_text_encoder_metadata,
    save_text_encoder,
    shapes_retain_prompts,
    sibling_anchors,
    trained_params,
)
from concept_eraser.spec import Concept, JobContext, JobSpec, ModelSource, SampleRow, UserError

from ..engine.tiny_sd import make_tiny_sd, make_tiny_sd2

RETAIN = ["a blue square", "a green circle", "a photo of a dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("adv_sd"))


@pytest.fixture
def bundle(tiny):
    return load_model(tiny)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _make_run(bundle, tmp_path, ctx: JobContext | None = None, resume: bool = False) -> UnlearnRun:
    spec = JobSpec(model=ModelSource(path=str(tmp_path)), concepts=[Concept(text="red")], method="advunlearn",
                   retain=[SampleRow(prompt=p) for p in RETAIN], seed=0)
    inputs = ForgetInputs(concepts=list(spec.concepts), anchor=None, retain=list(spec.retain))
    return UnlearnRun(bundle=bundle, spec=spec, ctx=ctx or JobContext(preview_every=0), run_dir=tmp_path / "run",
                      inputs=inputs, resume=resume)


def _config(**cfg) -> AdvUnlearnConfig:
    return AdvUnlearnConfig(**{"rollout_steps": 4, "batch": 2, "retain_batch": 2, "attack_steps": 2,
                               "pool_trajectories": 4, **cfg})


def _run(bundle, tmp_path, **cfg) -> dict[str, float]:
    gen = AdvUnlearn().run(_make_run(bundle, tmp_path), _config(**cfg))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_trains_text_encoder_layers_only(bundle, tmp_path):
    unet, vae, te = _state(bundle.unet), _state(bundle.vae), _state(bundle.text_encoder)
    stats = _run(bundle, tmp_path, steps=3, warmup=1, lr=1e-2, layers="all")
    assert stats["steps"] == 3 and "attack_end" in stats
    assert all(torch.equal(v, bundle.unet.state_dict()[k]) for k, v in unet.items()), "the UNet must stay frozen"
    assert all(torch.equal(v, bundle.vae.state_dict()[k]) for k, v in vae.items())
    after = bundle.text_encoder.state_dict()
    changed = {k for k, v in te.items() if not torch.equal(v, after[k])}
    assert not {k for k in changed if "embeddings" in k}, "token and position embeddings must stay bit-identical"
    assert any(".layers." in k for k in changed) and any("final_layer_norm" in k for k in changed)
    assert not any(p.requires_grad for p in bundle.text_encoder.parameters())
    assert not any(p.requires_grad or p.grad is not None for p in bundle.unet.parameters())


def test_default_trains_mlps_only(bundle, tmp_path):
    te = _state(bundle.text_encoder)
    _run(bundle, tmp_path, steps=2, warmup=1, lr=1e-2)
    after = bundle.text_encoder.state_dict()
    changed = {k for k, v in te.items() if not torch.equal(v, after[k])}
    assert changed and all(".mlp." in k for k in changed), sorted(changed)[:5]


def test_layer_choices(bundle):
    every = trained_params(bundle, "all")
    first = trained_params(bundle, "first", 1)
    attn, mlp = trained_params(bundle, "attention"), trained_params(bundle, "mlp")
    assert first and all(".layers.0." in n for n in first)
    assert attn and all(".self_attn." in n for n in attn) and mlp and all(".mlp." in n for n in mlp)
    assert set(first) | set(attn) | set(mlp) < set(every)
    assert not any("embeddings" in n for n in every)


def test_inner_attack_objective_decreases(bundle):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *denoise.x_shape(bundle), generator=g)
    t = torch.tensor([30, 60])
    with torch.no_grad():
        e_p = denoise.predict(bundle, x, t, denoise.encode(bundle, ["red circle"] * 2))
        # an "unlearned" encoder: perturb its layers so the plain prompt no longer reproduces e_p
        for p in trained_params(bundle).values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    ids = adv_token_ids(bundle, ["red circle"] * 2, 1)
    table = bundle.text_encoder.get_input_embeddings().weight
    delta, losses = inner_attack(bundle, ids, x, t, e_p, table[:1].detach().clone(), steps=12, lr=0.05)
    assert len(losses) == 12 and delta.shape == (1, table.shape[1])
    assert losses[-1] < losses[0]
    assert sum(b < a for a, b in zip(losses, losses[1:], strict=False)) >= 8  # mostly monotone
    assert not any(p.grad is not None for p in bundle.text_encoder.parameters()), "the attack must not touch θ's grads"


def _drift(tiny, tmp_path, prompts, runs: dict, vocabulary=None) -> tuple[dict, dict]:
    """Train a fresh copy of `tiny` per {key: config} and measure how far its predictions for `prompts` (fixed
    states, t 50) moved from the original's: ({key: mse}, {key: the run's stats})."""
    g = torch.Generator().manual_seed(1)
    orig = load_model(tiny)
    x = torch.randn(len(prompts), *denoise.x_shape(orig), generator=g)
    t = torch.full((len(prompts),), 50)
    with torch.no_grad():
        want = denoise.predict(orig, x, t, denoise.encode(orig, prompts))
    drift, stats = {}, {}
    for key, cfg in runs.items():
        b = load_model(tiny)
        if vocabulary is not None:
            b.meta = {**(b.meta or {}), "vocabulary": vocabulary}
        stats[key] = _run(b, tmp_path / str(key), **cfg)
        with torch.no_grad():
            drift[key] = torch.nn.functional.mse_loss(denoise.predict(b, x, t, denoise.encode(b, prompts)), want).item()
    return drift, stats


def test_retain_term_keeps_retain_predictions(tiny, tmp_path):
    drift, _ = _drift(tiny, tmp_path, RETAIN, {gamma: dict(steps=12, warmup=12, lr=3e-2, retain_weight=gamma,
                                                            retain_batch=4) for gamma in (0.0, 5.0)})
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_plug_and_play_text_encoder(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline

    source = load_model(tiny)
    with torch.no_grad():
        for p in trained_params(source).values():
            p.add_(0.05 * torch.randn_like(p))
    spec = JobSpec(model=ModelSource(path=str(tiny)), concepts=[Concept(text="red")], method="advunlearn")
    out = save_text_encoder(source, tmp_path / "te", {"job": spec})
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert JobSpec.model_validate_json(read_text_encoder_metadata(out)["job"]).concepts[0].text == "red"

    # another pipeline with the same text-encoder architecture but its own UNet
    pipe = StableDiffusionPipeline.from_pretrained(str(make_tiny_sd(tmp_path / "other")), safety_checker=None)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    unet_before = _state(pipe.unet)
    meta = apply_text_encoder(pipe, out)
    assert meta["method"] == "advunlearn"
    ids = source.tokenizer(["a red circle"], padding="max_length", max_length=12, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(pipe.text_encoder(ids)[0], source.text_encoder(ids)[0])
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in unet_before.items())
    image = pipe("a red circle", num_inference_steps=2, output_type="np", height=16, width=16).images
    assert image.shape == (1, 16, 16, 3)

    # a different architecture is refused with a clear message
    other = StableDiffusionPipeline.from_pretrained(str(make_tiny_sd2(tmp_path / "sd2")), safety_checker=None)
    with pytest.raises(UserError, match="hidden_size"):
        apply_text_encoder(other, out)


def test_shapes_default_retain_prompts():
    prompts = shapes_retain_prompts(["red"])
    assert prompts and not any(w in p for p in prompts for w in ("red", "crimson", "scarlet"))
    assert not any(p.startswith("a ") and len(p.split()) == 4 and p.split()[1] in ("green", "blue", "yellow")
                   and p.split()[2] in ("solid", "striped", "outlined") for p in prompts), "not the eval template"
    assert all("stripe" not in p and "stripy" not in p and "banded" not in p for p in shapes_retain_prompts(["striped"]))


def test_sibling_anchors():
    from types import SimpleNamespace

    from concept_eraser.demo.shapes_data import vocabulary

    shapes = SimpleNamespace(meta={"vocabulary": vocabulary()})
    refs, n = sibling_anchors(["striped", "a red striped circle"], ["striped"], shapes)
    assert n == 2 and refs == [None, None, "a red solid circle", "a red outlined circle"]
    # no vocabulary (or no swap): the stripped prompt
    refs, n = sibling_anchors(["a red striped circle"], ["striped"], SimpleNamespace(meta={}))
    assert (refs, n) == (["a red circle"], 1)


def test_sibling_mean_anchor_trains(bundle, tmp_path):
    """anchor=sibling_mean averages the teacher's predictions over every sibling of each forget prompt."""
    import math

    from concept_eraser.demo.shapes_data import vocabulary

    bundle.meta = {**(bundle.meta or {}), "vocabulary": vocabulary()}  # "red" has siblings: several rows per state
    te = _state(bundle.text_encoder)
    stats = _run(bundle, tmp_path, steps=2, warmup=1, lr=1e-2, anchor="sibling_mean")
    assert stats["forget_prompts"] > 1, "the vocabulary prompts naming red (each with its siblings)"
    assert stats["steps"] == 2 and math.isfinite(stats["loss"])
    assert any(not torch.equal(v, bundle.text_encoder.state_dict()[k]) for k, v in te.items())


def test_sibling_term_keeps_sibling_predictions(tiny, tmp_path):
    """sibling_weight > 0: the forget prompts' siblings (the concept swapped for another colour) keep the frozen
    model's predictions better than without the term (the retain term off, to see this term alone)."""
    from concept_eraser.demo.shapes_data import vocabulary

    sibs = ["a blue solid circle", "a green striped square", "a yellow outlined star"]
    # all layers: on the tiny random model the MLPs alone barely move the siblings, so little to hold
    drift, stats = _drift(tiny, tmp_path, sibs, {w: dict(steps=12, warmup=12, lr=3e-2, anchor="sibling_mean",
                                                          retain_weight=0.0, sibling_weight=w, layers="all")
                                                 for w in (0.0, 5.0)}, vocabulary=vocabulary())
    assert all(("sibling" in stats[w]) == (w > 0) for w in stats), stats
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_sibling_term_with_a_single_sibling(tiny, tmp_path):
    """An attribute with two values gives each forget prompt one sibling (one reference row per state under
    the default sibling-mean reference): the sibling term still applies."""
    from concept_eraser.demo.shapes_data import vocabulary

    b = load_model(tiny)
    b.meta = {**(b.meta or {}), "vocabulary": {**vocabulary(), "colours": ["red", "blue"]}}
    stats = _run(b, tmp_path, steps=2, warmup=1, lr=1e-2)
    assert stats["sibling"] >= 0 and stats["steps"] == 2


def test_cancel_then_resume_gives_identical_text_encoder(tiny, tmp_path):
    """δ (the adversarial tokens, warm-started across iterations) is saved beside the checkpoint, so a cancelled
    and resumed run ends bit-identical to an uninterrupted one."""
    from concept_eraser.methods.advunlearn import STATE
    from concept_eraser.spec import JobCancelled, run_blocking
    from concept_eraser.spec.events import Progress

    cfg = dict(steps=5, warmup=1, lr=1e-2)
    straight = load_model(tiny)
    _run(straight, tmp_path / "straight", **cfg)
    want = _state(straight.text_encoder)

    bundle = load_model(tiny)
    ctx = JobContext(preview_every=0)
    run = _make_run(bundle, tmp_path / "cut", ctx)

    def on_event(e):
        if isinstance(e, Progress) and e.step == 3:
            ctx.cancel.cancel()

    with pytest.raises(JobCancelled):
        run_blocking(AdvUnlearn().run(run, _config(**cfg)), on_event)
    assert (tmp_path / "cut" / "run" / STATE).is_file()
    bundle = load_model(tiny)  # the engine restores the model after a cancel; resume starts from the original
    stats = run_blocking(AdvUnlearn().run(_make_run(bundle, tmp_path / "cut", resume=True), _config(**cfg)))
    assert stats["steps"] == 5
    got = bundle.text_encoder.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not all(torch.equal(want[k], load_model(tiny).text_encoder.state_dict()[k]) for k in want)

    # a run directory without the δ file cannot be resumed silently with other tokens
    (tmp_path / "cut" / "run" / STATE).unlink()
    with pytest.raises(UserError, match="nothing to resume"):
        run_blocking(AdvUnlearn().run(_make_run(load_model(tiny), tmp_path / "cut", resume=True), _config(**cfg)))
