"""VDU: config validation, the Fisher precision, A against B, the digits outcome (fast), resume, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
from concept_eraser.methods import get_method, registry
from concept_eraser.methods.vdu import VDU, VDUConfig, fisher_diagonal, normalise_precision, preserve_pool
from concept_eraser.spec import JobContext, run_blocking
from concept_eraser.spec.events import Progress
from concept_eraser.spec.jobspec import Concept, ForgetImage, JobSpec, ModelSource
from concept_eraser.spec.runloop import JobCancelled, UserError


@pytest.fixture(scope="module")
def threes():
    from concept_eraser.demo.digits_data import load_digits_tensor

    x, y = load_digits_tensor()
    return x[y == 3][:32] * 2 - 1


def _run(bundle, images, tmp_path, ctx=None, resume=False, items=None, concepts=(), seed=0):
    spec = JobSpec(model=ModelSource(path="digits"), concepts=list(concepts), method="vdu", seed=seed,
                   forget_images=[ForgetImage(path=f"f{i}.png") for i in range(len(images))])
    return UnlearnRun(bundle, spec, ctx or JobContext(), tmp_path, ForgetInputs(list(concepts), None, [], images=images,
                                                                                image_items=items), resume=resume)


def _state(bundle):
    return {k: v.clone() for k, v in bundle.unet.state_dict().items()}


# ---------------------------------------------------------------- config


def test_registered():
    assert "vdu" in registry()
    assert isinstance(get_method("vdu"), VDU)
    card = VDU.card()
    assert card.fits("ddpm") and card.fits("ddpm-cond") and card.fits("sd") and not card.fits("sdxl")
    assert VDU.info.needs.forget_images


@pytest.mark.parametrize("bad", [
    {"t_range": [500, 100]},
    {"precision": "checkpoints"},
    {"precision": "checkpoints", "checkpoints": ["a.safetensors"]},
    {"checkpoints": ["a", "b"]},
    {"hinge": 2.0, "stop_ratio": 3.0},
    {"gamma": -1},
    {"lr": 0},
    {"group": "attn"},
    {"unknown": 1},
    {"preserve": -1},
    {"preserve_target": "other"},
])
def test_config_rejects(bad):
    with pytest.raises(UserError, match="vdu setting"):
        VDU().parse_config(bad)


def test_config_defaults_and_smoke():
    c = VDU().parse_config({})
    assert c.precision == "fisher" and c.hinge is not None and c.stop_ratio is not None
    assert c.gamma is None and c.lr is None and c.t_range is None and c.group is None  # per model kind
    assert c.steps is None and c.forget_generated is None and c.preserve_target == "teacher"
    assert c.counter is None and c.ascent_tokens == "all" and c.image_condition is None  # the SD recipe decides
    assert VDUConfig.smoke().steps <= 2
    ok = VDU().parse_config({"precision": "checkpoints", "checkpoints": ["a", "b"]})
    assert ok.checkpoints == ("a", "b")


def test_check_refuses_missing_images_and_checkpoints(tmp_path):
    b = load_model("digits")
    m = VDU()
    spec = JobSpec(model=ModelSource(path="digits"), method="vdu")
    with pytest.raises(UserError, match="example images"):
        m.check(b.summary, spec, m.parse_config({}))
    spec = spec.model_copy(update={"forget_images": [ForgetImage(path="x.png")]})
    m.check(b.summary, spec, m.parse_config({}))
    cfg = m.parse_config({"precision": "checkpoints", "checkpoints": [str(tmp_path / "a"), str(tmp_path / "b")]})
    with pytest.raises(UserError, match="checkpoint not found"):
        m.check(b.summary, spec, cfg)
    with pytest.raises(UserError, match="UNet tensors only"):  # the text encoder never got a gradient
        m.check(b.summary, spec, m.parse_config({"group": "text-encoder"}))


# ---------------------------------------------------------------- precision


def test_normalise_precision_floors_and_caps():
    raw = {"a": torch.tensor([0.0, 100.0, 200.0, 1e7]), "b": torch.ones(10_000)}
    p = normalise_precision(raw, floor=0.01, sigma2_floor=1e-3)
    allv = torch.cat([p["a"], p["b"]])
    assert (allv >= 0.01).all() and (allv <= 1000).all()
    assert p["a"][0] == pytest.approx(0.01) and p["a"][3] == pytest.approx(1000)
    assert p["a"][2] > p["a"][1]


def test_fisher_is_positive_and_larger_for_parameters_that_matter(tmp_path, threes):
    b = load_model("digits")
    from concept_eraser.engine.params import select_params

    params = select_params(b, "full")
    cfg = VDUConfig(fisher_samples=3, fisher_steps=2, fisher_draws=1)
    raw = run_blocking(fisher_diagonal(_run(b, threes[:2], tmp_path), cfg, params, seed=0))
    prec = normalise_precision(raw, cfg.precision_floor, cfg.sigma2_floor)
    allp = torch.cat([v.flatten() for v in prec.values()])
    assert (allp >= cfg.precision_floor).all() and (allp <= 1 / cfg.sigma2_floor).all()
    # Unconditional forgetting: the model's own samples are drawn and scored under ∅ (the null class 10), so
    # the null row of the class embedding matters and the rows of classes 0-9 get only the floor.
    emb = prec["unet.class_embedding.weight"]
    assert torch.allclose(emb[:10], torch.full_like(emb[:10], cfg.precision_floor))
    assert emb[10].mean() > 10 * cfg.precision_floor
    # the output layer (every prediction goes through it) is held tighter than the average weight
    assert prec["unet.conv_out.weight"].mean() > 1.0
    assert all(not p.requires_grad for p in params.values())


# ---------------------------------------------------------------- A against B


def test_ascent_raises_forget_error_and_the_anchor_bounds_drift(tmp_path, threes):
    common = {"steps": 8, "batch_size": 4, "lr": 3e-4, "precision": "uniform", "stop_ratio": None, "hinge": None,
              "t_range": (100, 900)}
    out = {}
    for gamma in (0.0, 1.0):
        b = load_model("digits")
        cfg = VDU().parse_config({**common, "gamma": gamma, "check_every": 8})
        out[gamma] = run_blocking(VDU().run(_run(b, threes, tmp_path / str(gamma)), cfg))
    # check_ratio: the fixed early-stop draws' error now / the original's (1.0 = unchanged)
    assert out[0.0]["check_ratio"] > 1.2, out
    assert out[1.0]["check_ratio"] > 1.0, out
    assert out[1.0]["relative_drift"] < 0.6 * out[0.0]["relative_drift"], out


def test_early_stop_and_events(tmp_path, threes):
    b = load_model("digits")
    cfg = VDU().parse_config({"steps": 40, "batch_size": 4, "lr": 1e-3, "precision": "uniform", "gamma": 0.0,
                              "check_every": 4, "check_draws": 1, "stop_ratio": 1.5, "hinge": 4.0})
    events = []
    stats = run_blocking(VDU().run(_run(b, threes, tmp_path), cfg), events.append)
    assert stats["stopped_early"] == 1.0 and stats["steps"] < 40 and stats["check_ratio"] >= 1.5
    prog = [e for e in events if isinstance(e, Progress) and e.stage == "unlearn"]
    assert [e.step for e in prog] == list(range(1, int(stats["steps"]) + 1))
    assert {e.total for e in prog} == {40}


def _pool(run, cfg, x0, items):
    gen = preserve_pool(run, cfg, x0, items, 0)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def test_preserve_pool_leaves_out_forget_lookalikes(tmp_path, threes):
    from concept_eraser.engine import denoise as dn

    b = load_model("digits")
    x0 = dn.images_to_x0(b, threes)
    run = _run(b, threes, tmp_path)
    common = {"preserve_samples": 48, "fisher_steps": 6}
    xa, _, target, dropped = _pool(run, VDU().parse_config({**common, "preserve_margin": 0.0}), x0, [None] * 32)
    assert len(xa) == 48 and dropped == 0 and target == "teacher"  # the default: distil the original model
    _, _, target, _ = _pool(run, VDU().parse_config({**common, "preserve_target": "auto"}), x0, [None] * 32)
    assert target == "noise"  # auto with ∅ forgetting: refit to the model's own samples
    xp, cond, _, dropped = _pool(run, VDU().parse_config({**common, "preserve_margin": 100.0}), x0, [None] * 32)
    assert len(xp) == 12 and dropped == 36 and len(cond) == 12  # everything close: keep the farthest quarter
    xm, _, _, dropped = _pool(run, VDU().parse_config(common), x0, [None] * 32)
    assert 0 < len(xm) < 48
    d = torch.cdist(xa.flatten(1), x0.flatten(1)).min(1).values
    kept = torch.cdist(xm.flatten(1), x0.flatten(1)).min(1).values
    assert kept.min() >= d.min()
    # labelled forget images of a class-conditional model: the other classes, distilled from the original
    _, cond, target, dropped = _pool(run, VDU().parse_config({"preserve_samples": 9, "fisher_steps": 2,
                                                              "preserve_target": "auto"}), x0, [3] * 32)
    assert target == "teacher" and dropped == 0 and len(cond) == 9


# ---------------------------------------------------------------- outcome (fast digits)


def test_unconditional_share_of_threes_falls(tmp_path, threes):
    from concept_eraser.demo.digits_judge import load_digits_judge
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec.jobspec import SampleRow, SamplingSpec

    b = load_model("digits")
    judge = load_digits_judge()
    spec = SamplingSpec(rows=[SampleRow()], seeds=list(range(240)), steps=8, batch_size=240)
    before = judge.predict(run_blocking(sample_grid(b, spec, JobContext())).images[0])
    cfg = VDU().parse_config(FAST)
    run_blocking(VDU().run(_run(b, threes, tmp_path), cfg))
    after = judge.predict(run_blocking(sample_grid(b, spec, JobContext())).images[0])
    n_before, n_after = int((before == 3).sum()), int((after == 3).sum())
    assert n_before >= 15
    assert n_after <= 0.5 * n_before, (n_before, n_after, np.bincount(after, minlength=10))


# Fast and strong (a weak anchor, every timestep): enough to show the direction in a few seconds of training;
# the defaults and the full measurement are in bench/vdu_outcomes.py.
FAST = {"steps": 40, "batch_size": 8, "gamma": 3e-3, "lr": 1e-4, "t_range": (0, 1000), "stop_ratio": None,
        "fisher_samples": 16, "fisher_draws": 1, "fisher_steps": 10, "preserve": 1.0, "preserve_samples": 64}


def _logs(events) -> str:
    return " | ".join(e.message for e in events if hasattr(e, "message"))


def test_linear_a_is_the_default_only_under_null(tmp_path, threes):
    events = []
    run_blocking(VDU().run(_run(load_model("digits"), threes[:4], tmp_path / "u"), VDUConfig.smoke()), events.append)
    logs = _logs(events)
    assert "A linear" in logs and "t in [250, 1000)" in logs and "weight 4.0" in logs
    events = []
    run_blocking(VDU().run(_run(load_model("digits"), threes[:4], tmp_path / "c", items=[3] * 4), VDUConfig.smoke()),
                 events.append)
    logs = _logs(events)
    assert "A hinge" in logs and "t in [500, 1000)" in logs and "weight 10.0" in logs


def test_linear_a_takes_the_ascents_first_step(tmp_path, threes):
    # at θ = θ* the two forms have the same gradient (the dropped −‖f − f*‖² is flat there): equal first steps
    base = {"steps": 1, "batch_size": 4, "gamma": 0.0, "preserve": 0.0, "stop_ratio": None, "precision": "uniform",
            "fisher_samples": 2, "fisher_steps": 2, "fisher_draws": 1, "t_range": (500, 1000)}
    moved = {}
    for form in ("hinge", "linear"):
        b = load_model("digits")
        before = _state(b)
        run_blocking(VDU().run(_run(b, threes[:8], tmp_path / form), VDU().parse_config({**base, "ascent": form})))
        moved[form] = {k: v - before[k] for k, v in _state(b).items()}
    assert any(float(d.abs().max()) > 0 for d in moved["linear"].values())
    for k, d in moved["hinge"].items():
        torch.testing.assert_close(moved["linear"][k], d, rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------- resume and cancel


def _cancel_at(step, ctx):
    def on(ev):
        if isinstance(ev, Progress) and ev.stage == "unlearn" and ev.step == step:
            ctx.cancel.cancel()
    return on


def test_resume_gives_identical_weights(tmp_path, threes):
    cfg = VDU().parse_config({"steps": 6, "batch_size": 2, "check_every": 2, "check_draws": 1, "stop_ratio": 3.0,
                              "fisher_samples": 2, "fisher_steps": 2, "fisher_draws": 1, "preserve_samples": 8,
                              "preserve_batch": 4})
    ref = load_model("digits")
    run_blocking(VDU().run(_run(ref, threes[:4], tmp_path / "ref"), cfg))
    b = load_model("digits")
    ctx = JobContext()
    with pytest.raises(JobCancelled):
        run_blocking(VDU().run(_run(b, threes[:4], tmp_path / "cut", ctx=ctx), cfg), _cancel_at(3, ctx))
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    b2 = load_model("digits")  # a fresh process would reload the original model
    stats = run_blocking(VDU().run(_run(b2, threes[:4], tmp_path / "cut", resume=True), cfg))
    assert stats["steps"] == 6
    want, got = _state(ref), _state(b2)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_cancel_before_and_during(tmp_path, threes):
    cfg = VDU().parse_config({"steps": 5, "batch_size": 2, "precision": "uniform", "preserve_samples": 4})
    b = load_model("digits")
    orig = _state(b)
    ctx = JobContext()
    ctx.cancel.cancel()
    with pytest.raises(JobCancelled):
        run_blocking(VDU().run(_run(b, threes[:4], tmp_path / "a", ctx=ctx), cfg))
    assert all(torch.equal(orig[k], v) for k, v in _state(b).items())
    ctx = JobContext()
    with pytest.raises(JobCancelled):
        run_blocking(VDU().run(_run(b, threes[:4], tmp_path / "b", ctx=ctx), cfg), _cancel_at(2, ctx))
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 2


# ---------------------------------------------------------------- Stable Diffusion and labels


def test_sd_smoke_with_concept_prompt(tmp_path):
    from concept_eraser.demo.shapes_data import ShapeAttrs, draw

    b = load_model("shapes")
    rng = np.random.default_rng(0)
    imgs = np.stack([draw(ShapeAttrs(2, i % 4, 1), rng) for i in range(4)])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    before = _state(b)
    events = []
    stats = run_blocking(VDU().run(_run(b, x, tmp_path, concepts=[Concept(text="striped")]), VDUConfig.smoke()),
                         events.append)
    assert stats["steps"] >= 1
    after = _state(b)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in changed)  # the recipe trains kv
    logs = _logs(events)
    assert "tokens: all" in logs and "t in [200, 600)" in logs and "counter-examples: 2 images" in logs
    assert "captioned by the original model" in logs and "function-space stabiliser" in logs


def test_counter_examples_pair_forget_prompts_with_sibling_images(tmp_path):
    from concept_eraser.methods.esd import _siblings
    from concept_eraser.methods.vdu import counter_images

    b = load_model("shapes")
    assert _siblings(b, "striped") == ["solid", "outlined"] and _siblings(b, "red") == ["green", "blue", "yellow"]
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text="triangle")], method="vdu")
    run = UnlearnRun(b, spec, JobContext(), tmp_path, ForgetInputs([Concept(text="triangle")], None, []))
    cfg = VDUConfig.smoke().model_copy(update={"counter_samples": 3, "fisher_steps": 2})
    x0, items = run_blocking(counter_images(run, cfg, 0))
    assert x0.shape[0] == 3 and all("triangle" in i for i in items)


def test_fit_captions_picks_the_prompt_that_explains_the_image():
    from concept_eraser.demo.shapes_data import COLOURS, SHAPES, TEXTURES, ShapeAttrs, draw
    from concept_eraser.engine import denoise as dn
    from concept_eraser.methods.vdu import fit_captions, forget_prompts

    b = load_model("shapes")
    rng = np.random.default_rng(0)
    attrs = [ShapeAttrs(SHAPES.index(s), COLOURS.index(c), TEXTURES.index("striped"))
             for s, c in (("circle", "red"), ("square", "blue"), ("star", "yellow"))]
    imgs = np.stack([draw(a, rng) for a in attrs])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = fit_captions(b, dn.images_to_x0(b, x), forget_prompts(b, [Concept(text="striped")]), seed=0)
    assert got == ["a red striped circle", "a blue striped square", "a yellow striped star"]


def test_class_items_per_image(tmp_path, threes):
    b = load_model("digits")
    items = [3] * len(threes)
    stats = run_blocking(VDU().run(_run(b, threes, tmp_path, items=items), VDUConfig.smoke()))
    assert stats["steps"] >= 1
    with pytest.raises(UserError, match="prompts/labels"):
        run_blocking(VDU().run(_run(load_model("digits"), threes, tmp_path / "x", items=[3]), VDUConfig.smoke()))


def test_sd_without_images_generates_them_from_prompts_naming_the_concept(tmp_path):
    from concept_eraser.methods.vdu import forget_prompts
    from concept_eraser.spec.events import Log

    b = load_model("shapes")
    prompts = forget_prompts(b, [Concept(text="striped")])
    assert prompts and all("striped" in p for p in prompts) and len(prompts) == 16  # 4 colours x 4 shapes
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text="striped")], method="vdu")
    VDU().check(b.summary, spec, VDU().parse_config({}))  # SD with a concept: no images needed
    with pytest.raises(UserError, match="example images"):
        VDU().check(b.summary, spec, VDU().parse_config({"forget_generated": 0}))
    run = UnlearnRun(b, spec, JobContext(), tmp_path, ForgetInputs([Concept(text="striped")], None, []))
    cfg = VDUConfig.smoke().model_copy(update={"forget_generated": 2})
    events = []
    stats = run_blocking(VDU().run(run, cfg), events.append)
    assert stats["steps"] >= 1
    assert any(isinstance(e, Log) and "2 forget images generated" in e.message for e in events)


def test_token_mask_passes_gradient_only_through_concept_tokens():
    from concept_eraser.engine import denoise as dn
    from concept_eraser.methods.vdu import _concept_words, _token_gradient, concept_token_mask

    b = load_model("shapes")
    items = ["a red striped circle", "a blue stripy square", None]
    words = _concept_words(b, [Concept(text="striped")])
    mask = concept_token_mask(b, items, words)
    assert mask.sum(1).tolist() == [1, 1, 0]  # the word and its synonym, one token each; ∅ has none
    after = concept_token_mask(b, items, words, after=True)
    assert (after[:, :3] == mask[:, :3]).all() and after[0, 3:].all() and not after[2].any()
    cond = dn.encode(b, items)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(items), *dn.x_shape(b), generator=g)
    t = torch.full((len(items),), 600)
    k = next(m for n, m in b.unet.named_modules() if n.endswith("attn2.to_k"))
    k.weight.requires_grad_(True)
    seen = {}

    def grad_of(m):
        k.weight.grad = None
        # record to_k's input and the gradient reaching its output (after the mask hook, which runs first)
        def record(mod, inp, o):
            seen["inp"] = inp[0]
            o.register_hook(lambda gr: seen.update(g=gr))

        h = k.register_forward_hook(record)
        with _token_gradient(b.unet, m):
            out = dn.predict(b, x, t, cond)
        h.remove()
        out.pow(2).sum().backward()
        return out.detach(), k.weight.grad.clone()

    out_all, g_all = grad_of(None)
    out_m, g_m = grad_of(mask)
    assert torch.equal(out_all, out_m)  # same forward values
    # the weight gradient is the sum over the concept positions only
    sel = mask[..., None].float()
    expected = torch.einsum("bld,ble->de", seen["g"] * sel, seen["inp"] * sel)
    assert torch.allclose(g_m, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(g_m, g_all, atol=1e-5, rtol=1e-4)
    _, g_none = grad_of(torch.zeros_like(mask))
    assert float(g_none.abs().max()) == 0.0
