"""UCE: config validation, the closed form on a tiny problem, and a fast erasure check on the shapes demo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from concept_eraser.methods import get_method
from concept_eraser.methods.uce import UCE, KeySet, UCEConfig, edit_matrix, kv_modules, residuals
from concept_eraser.resources import judges_dir, models_dir
from concept_eraser.spec.runloop import CancelToken, JobCancelled, JobContext, UserError, run_blocking

SHAPES = models_dir() / "shapes"
needs_shapes = pytest.mark.skipif(not (SHAPES / "model_index.json").is_file()
                                  or not (judges_dir() / "shapes-judge.safetensors").is_file(),
                                  reason="shapes demo not built (concept-eraser demo build shapes)")


# ---------------------------------------------------------------- config

def test_registered_with_card():
    method = get_method("uce")
    assert isinstance(method, UCE)
    card = UCE.card()
    assert card.fits("sd") and card.fits("sdxl") and not card.fits("ddpm-cond")
    assert card.defaults["lamb"] == 0.5 and card.defaults["erase_scale"] == 1.0
    assert UCEConfig.smoke().contexts == ("{}",)


@pytest.mark.parametrize("bad", [{"contexts": ["a photo"]}, {"contexts": ["{} and {}"]}, {"contexts": []},
                                 {"lamb": 0}, {"erase_scale": -1}, {"padding_weight": 2}, {"tokens": "all"},
                                 {"typo": 1}])
def test_bad_settings_are_one_line_user_errors(bad):
    with pytest.raises(UserError, match="uce setting"):
        UCE().parse_config(bad)


# ---------------------------------------------------------------- the closed form

def _official(w, ce, cg, cp, s_e, s_p, lamb):
    """Eq. 7 written out as in the paper / official code (per layer), for comparison."""
    d = w.shape[1]
    mat1 = lamb * w + s_e * (w @ cg.T) @ ce + s_p * (w @ cp.T) @ cp
    mat2 = lamb * torch.eye(d, dtype=w.dtype) + s_e * ce.T @ ce + s_p * cp.T @ cp
    return mat1 @ torch.linalg.inv(mat2)


def test_closed_form_maps_erase_keys_to_guide_values_and_keeps_preserve_keys():
    g = torch.Generator().manual_seed(0)
    d, out = 12, 20
    w = torch.randn(out, d, generator=g, dtype=torch.float64)
    ce = torch.randn(3, d, generator=g, dtype=torch.float64)  # erase keys
    cg = torch.randn(3, d, generator=g, dtype=torch.float64)  # their guide vectors
    cp = torch.randn(6, d, generator=g, dtype=torch.float64)  # preserve keys
    keys = KeySet(ce, cg, cp, ["x"])
    m = edit_matrix(keys, erase_scale=1.0, preserve_scale=1.0, lamb=1e-4)
    w_new = w @ m
    assert torch.allclose(w_new, _official(w, ce, cg, cp, 1.0, 1.0, 1e-4), atol=1e-9)
    # 9 keys < 12 dims: both sets are met almost exactly
    assert torch.allclose(ce @ w_new.T, cg @ w.T, atol=1e-3)
    assert torch.allclose(cp @ w_new.T, cp @ w.T, atol=1e-3)
    e, p = residuals(w, w_new, keys)
    assert e < 1e-3 and p < 1e-3
    # the paper's defaults (λ = 0.5) pull towards the old weights: still close on both sets
    w_half = w @ edit_matrix(keys, 1.0, 1.0, 0.5)
    assert torch.allclose(w_half, _official(w, ce, cg, cp, 1.0, 1.0, 0.5), atol=1e-9)
    e, p = residuals(w, w_half, keys)
    assert e < 0.25 and p < 0.1
    # keys orthogonal to everything given are untouched (the ridge keeps W elsewhere)
    basis = torch.linalg.qr(torch.cat([ce, cg, cp]).T, mode="complete").Q[:, 12 - 3:]
    if torch.linalg.matrix_rank(torch.cat([ce, cg, cp])) < d:
        assert torch.allclose(basis.T @ w_half.T, basis.T @ w.T, atol=1e-6)


def test_no_preserve_keys_and_float64_solve_even_for_float32_weights():
    ce = torch.eye(4, dtype=torch.float64)[:2]
    cg = torch.zeros(2, 4, dtype=torch.float64)
    keys = KeySet(ce, cg, torch.zeros(0, 4, dtype=torch.float64), [])
    m = edit_matrix(keys, erase_scale=1e6, preserve_scale=1.0, lamb=0.5)
    assert m.dtype == torch.float64
    w = torch.randn(3, 4, dtype=torch.float64)
    w_new = w @ m
    assert torch.allclose(w_new[:, :2], torch.zeros(3, 2, dtype=torch.float64), atol=1e-5)  # erased to nothing
    assert torch.allclose(w_new[:, 2:], w[:, 2:])  # other directions kept
    assert residuals(w, w_new, keys)[1] == 0.0


# ---------------------------------------------------------------- on the shapes demo

@pytest.fixture(scope="module")
def shapes():
    from concept_eraser.demo.shapes_judge import load_shapes_judge
    from concept_eraser.engine.loading import load_model

    bundle = load_model("shapes")
    original = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    return bundle, original, load_shapes_judge()


def _run(bundle, concept="striped", guide=None, retain=(), ctx=None, **config):
    from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
    from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource, SampleRow

    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text=concept)],
                   anchor=Concept(text=guide) if guide else None, retain=[SampleRow(prompt=p) for p in retain],
                   method="uce")
    inputs = ForgetInputs(concepts=spec.concepts, anchor=spec.anchor, retain=spec.retain)
    method = UCE()
    run = UnlearnRun(bundle, spec, ctx or JobContext(), SHAPES, inputs)  # run_dir is never written by UCE
    events = []
    stats = run_blocking(method.run(run, method.parse_config(config)), events.append)
    return stats, events


def _textures(bundle, judge, prompts, seeds):
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec.jobspec import SampleRow, SamplingSpec

    spec = SamplingSpec(rows=[SampleRow(prompt=p) for p in prompts], seeds=seeds, steps=25, guidance=3.0,
                        batch_size=64)
    grid = run_blocking(sample_grid(bundle, spec, JobContext()))
    return np.stack([judge.predict(np.asarray(grid.images[i]))["texture"] for i in range(len(prompts))])


@needs_shapes
def test_shapes_striped_is_forgotten_and_other_textures_stay(shapes):
    from concept_eraser.demo.shapes_data import TEXTURES, caption

    bundle, original, judge = shapes
    bundle.unet.load_state_dict(original)
    forget = [caption(s, c, "striped") for s, c in (("circle", "red"), ("square", "blue"), ("triangle", "green"))]
    keep = [caption("circle", "yellow", "solid"), caption("square", "red", "outlined")]
    seeds = [11, 12, 13, 14]
    before = _textures(bundle, judge, forget + keep, seeds)
    erase = [caption(s, c, "striped", template=k) for s in ("circle", "square", "triangle", "star")
             for c in ("red", "green", "blue", "yellow") for k in (0, 1, 2, 5)]
    retain = [caption(s, c, t, template=k) for s in ("circle", "square", "triangle", "star")
              for c in ("red", "green", "blue", "yellow") for t in ("solid", "outlined") for k in (0, 1, 2, 5)]
    try:
        stats, events = _run(bundle, "striped", guide="solid", retain=retain, erase_prompts=erase)
        after = _textures(bundle, judge, forget + keep, seeds)
    finally:
        bundle.unet.load_state_dict(original)
    striped = TEXTURES.index("striped")
    n = len(forget)
    assert (before[:n] == striped).mean() >= 0.9
    assert (after[:n] == striped).mean() <= 0.25
    want = np.array([[TEXTURES.index("solid")], [TEXTURES.index("outlined")]])
    assert (after[n:] == want).mean() >= (before[n:] == want).mean() - 0.15
    assert stats["layers_edited"] == 14 and stats["erase_residual"] < 0.5 and stats["preserve_residual"] < 0.2
    progress = [e for e in events if type(e).__name__ == "Progress"]
    assert [e.step for e in progress] == list(range(1, 15)) and "erase_residual" in progress[0].scalars


@needs_shapes
def test_only_cross_attention_k_v_change(shapes):
    bundle, original, _ = shapes
    bundle.unet.load_state_dict(original)
    text_before = {k: v.clone() for k, v in bundle.text_encoder.state_dict().items()}
    vae_before = {k: v.clone() for k, v in bundle.vae.state_dict().items()}
    try:
        _run(bundle, "triangle", retain=["a red striped circle"])
        changed = {k for k, v in bundle.unet.state_dict().items() if not torch.equal(v, original[k])}
        assert changed == {f"{n}.weight" for n, _ in kv_modules(bundle.unet)}
        assert len(changed) == 14 and all(".attn2.to_" in k for k in changed)
        assert all(torch.equal(v, text_before[k]) for k, v in bundle.text_encoder.state_dict().items())
        assert all(torch.equal(v, vae_before[k]) for k, v in bundle.vae.state_dict().items())
        assert all(v.dtype == original[k].dtype for k, v in bundle.unet.state_dict().items())
    finally:
        bundle.unet.load_state_dict(original)


@needs_shapes
def test_cancel_stops_before_editing_a_layer(shapes):
    bundle, original, _ = shapes
    bundle.unet.load_state_dict(original)
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        _run(bundle, "striped", ctx=JobContext(cancel=token))
    assert all(torch.equal(v, original[k]) for k, v in bundle.unet.state_dict().items())


@needs_shapes
def test_input_errors_are_user_errors(shapes):
    bundle, original, _ = shapes
    with pytest.raises(UserError, match="guide"):
        _run(bundle, "striped", guide="striped")
    with pytest.raises(UserError, match="contains a concept"):
        _run(bundle, "striped", retain=["a red striped circle"])
    assert all(torch.equal(v, original[k]) for k, v in bundle.unet.state_dict().items())


def test_check_refuses_class_conditional_models():
    from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource
    from concept_eraser.spec.summary import ModelSummary

    summary = ModelSummary(kind="ddpm-cond", architecture="DDPM UNet2DModel", prediction_type="epsilon",
                           resolution=16, dtype="float32", parameters=1, sha256="0", source="digits", num_classes=10)
    spec = JobSpec(model=ModelSource(path="digits"), concepts=[Concept(label=3)])
    with pytest.raises(UserError, match="works on sd, sdxl"):
        UCE().check(summary, spec, UCEConfig())


# ---------------------------------------------------------------- SDXL (same code: two encoders side by side)

def _tiny_sdxl(folder):
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from tests.engine.tiny_sd import write_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4, use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 16, cross_attention_dim=32, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16)
    write_tokenizer(folder / "_tok")
    tok = CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"), model_max_length=12)
    cfg = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
               max_position_embeddings=12, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, projection_dim=16)
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)), tokenizer_2=tok,
        scheduler=EulerDiscreteScheduler(num_train_timesteps=100, beta_schedule="scaled_linear"))
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"


def test_sdxl_uses_the_same_code(tmp_path):
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
    from concept_eraser.methods.uce import collect_keys
    from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource, SampleRow

    bundle = load_model(_tiny_sdxl(tmp_path))
    assert bundle.summary.kind == "sdxl"
    before = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    spec = JobSpec(model=ModelSource(path=str(tmp_path / "model")), concepts=[Concept(text="cat")],
                   anchor=Concept(text="dog"), retain=[SampleRow(prompt="a red circle")], method="uce")
    inputs = ForgetInputs(concepts=spec.concepts, anchor=spec.anchor, retain=spec.retain)
    method = UCE()
    # with the default sets (the common-concepts preserve list) ...
    stats = run_blocking(method.run(UnlearnRun(bundle, spec, JobContext(), tmp_path, inputs),
                                    method.parse_config({"erase_scale": 100.0})))
    changed = {k for k, v in bundle.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{n}.weight" for n, _ in kv_modules(bundle.unet)} and changed
    assert stats["layers_edited"] == len(changed) and stats["preserve_keys"] > 1000
    # ... and with only the given retain prompt, whose erase/preserve balance the residual check below is set for
    # (the tiny 32-dim encoder cannot also keep ~1800 common-concept prompts exactly)
    bundle.unet.load_state_dict(before)
    cfg = method.parse_config({"erase_scale": 100.0, "default_sets": False})
    stats = run_blocking(method.run(UnlearnRun(bundle, spec, JobContext(), tmp_path, inputs), cfg))
    assert {k for k, v in bundle.unet.state_dict().items() if not torch.equal(v, before[k])} == changed
    keys = collect_keys(bundle, ["cat"], ["dog"], ["cat", "a photo of cat"], ["a red circle"], "concept+after")
    assert keys.erase.shape[1] == 32  # both encoders' hidden states side by side
    name, mod = kv_modules(bundle.unet)[0]
    w_new, w_old = mod.weight.double(), before[f"{name}.weight"].double()
    was = (keys.erase @ w_old.T - keys.guide @ w_old.T).norm()
    now = (keys.erase @ w_new.T - keys.guide @ w_old.T).norm()
    assert now < 0.5 * was


# ---------------------------------------------------------------- default sets (no model needed)

def test_compressed_preserve_keys_give_the_same_edit():
    from concept_eraser.methods.uce import _gram_rows

    g = torch.Generator().manual_seed(1)
    d = 8
    ce, cg = torch.randn(3, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    cp = torch.randn(50, d, generator=g, dtype=torch.float64)  # more preserve keys than dimensions
    full = KeySet(ce, cg, cp, ["x"])
    small = KeySet(ce, cg, _gram_rows(cp.T @ cp), ["x"], preserve_count=50)
    assert small.preserve.shape[0] <= d and small.n_preserve == 50
    m_full, m_small = edit_matrix(full, 1.0, 1.0, 0.5), edit_matrix(small, 1.0, 1.0, 0.5)
    assert torch.allclose(m_full, m_small, atol=1e-9)
    w = torch.randn(5, d, generator=g, dtype=torch.float64)
    assert all(abs(a - b) < 1e-9 for a, b in zip(residuals(w, w @ m_full, full), residuals(w, w @ m_small, small),
                                                  strict=True))


@pytest.mark.parametrize("concept", ["striped", "stripy", "triangle"])
def test_vocabulary_default_sets_preserve_every_caption_without_the_concept(concept):
    from types import SimpleNamespace

    from concept_eraser.demo.shapes_data import vocabulary
    from concept_eraser.methods.uce import vocabulary_sets

    sets = vocabulary_sets(SimpleNamespace(meta={"vocabulary": vocabulary()}), [concept])
    assert sets is not None and sets.erase and sets.preserve
    assert all(concept in p for p in sets.erase)
    base = "striped" if concept == "stripy" else concept
    banned = (base, "stripes", "stripy", "banded") if base == "striped" else (base,)
    assert not any(w in p for p in sets.preserve for w in banned)
    assert len(sets.preserve) == 6 * (48 - (16 if base == "striped" else 12))  # every other combination x template
    assert sets.siblings[concept] == (["solid", "outlined"] if base == "striped" else ["circle", "square", "star"])
    assert vocabulary_sets(SimpleNamespace(meta={}), [concept]) is None


def test_common_concepts_default_preserve_set_excludes_the_concept():
    from concept_eraser.methods.uce import common_concepts, default_preserve_concepts

    assert len(common_concepts()) >= 200
    for concept, gone in (("dog", ("dog", "hot dog")), ("Van Gogh", ("Vincent van Gogh",)),
                          ("Vincent van Gogh", ("Vincent van Gogh",)), ("a photo of a cat", ("cat",))):
        kept = default_preserve_concepts([concept])
        assert len(kept) >= 200 and not any(g in kept for g in gone)
    assert "cat" in default_preserve_concepts(["dog"]) and "Claude Monet" in default_preserve_concepts(["dog"])
