"""Known-answer tests of the leak tests (paraphrases, attacks, interference) and the evaluation report.

Tiny budgets: few seeds, 10 sampling steps, a handful of attack steps."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from concept_eraser.spec import Concept, JobContext, JobSpec, ModelSource, run_blocking

STEPS = 10


def _token(bundle, word):
    ids = bundle.tokenizer(word).input_ids[1:-1]
    assert len(ids) == 1, f"{word!r} is not one token"
    return ids[0]


@pytest.fixture(scope="module")
def weak_striped(shapes_bundle):
    """A deliberately weak erasure: only the token embedding of 'striped' is replaced by that of 'solid'."""
    edited = copy.deepcopy(shapes_bundle)
    emb = edited.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        emb[_token(edited, "striped")] = emb[_token(edited, "solid")]
    return edited


def test_misspellings_and_probes():
    from concept_eraser.metrics.paraphrase import build_probes, misspellings

    assert misspellings("striped") == ["stirped", "stripd"]
    probes = build_probes("shapes", "striped", ["zebra pattern circle"])
    kinds = {k for k, _ in probes}
    assert kinds == {"base", "synonym", "template", "misspelling", "user"}
    prompts = [p for _, p in probes]
    assert "a red stripy circle" in prompts and "a red banded circle" in prompts
    assert any("with stripes" in p for p in prompts)
    assert len(prompts) == len(set(prompts))


def test_paraphrases_on_unedited_model_match_the_original(shapes_bundle):
    from concept_eraser.metrics.paraphrase import paraphrase_leaks

    r = paraphrase_leaks(shapes_bundle, shapes_bundle, ["striped"], samples=4, steps=STEPS)
    assert len(r.probes) >= 8
    for p in r.probes:
        assert p.recognised == pytest.approx(p.recognised_before), p.probe
    informative = [p for p in r.probes if p.informative and p.kind != "base"]
    assert len(informative) >= 4
    assert r.leak_rate == 1.0  # nothing was erased: every informative paraphrase "leaks"


def test_weak_erasure_of_the_base_word_leaks_through_synonyms(shapes_bundle, weak_striped):
    from concept_eraser.metrics.paraphrase import paraphrase_leaks

    r = paraphrase_leaks(shapes_bundle, weak_striped, ["striped"], samples=4, steps=STEPS)
    by = {p.probe: p for p in r.probes}
    base = by["a red striped circle"]
    assert base.recognised_before >= 0.75 and not base.leaked and base.recognised <= 0.25
    for syn in ("a red stripy circle", "a red banded circle"):
        assert by[syn].informative and by[syn].leaked, by[syn]
    assert r.leak_rate >= 0.3
    assert json.loads(json.dumps(r.to_json()))["probes"][0]["probe"] == "a red striped circle"


def test_soft_prompt_attack_on_unedited_shapes_model_succeeds(shapes_bundle):
    from concept_eraser.metrics.attack import attack_sd
    from concept_eraser.metrics.recognition import recogniser

    judge, _ = recogniser(shapes_bundle, "striped")
    r = attack_sd(shapes_bundle, shapes_bundle, "a red striped circle", None, judge, k=2, steps=2, lr=0.01,
                  seeds=list(range(100, 110)), sampling_steps=STEPS)
    assert r.asr >= 0.9
    assert r.embeddings.shape == (10, 2, shapes_bundle.text_encoder.config.hidden_size)
    assert len(r.per_attempt) == 10 and all(np.isfinite(a["loss_end"]) for a in r.per_attempt)
    assert r.images.shape == (10, 32, 32, 3)


def test_class_attack_on_unedited_digits_model_succeeds(digits_bundle):
    from concept_eraser.metrics.attack import attack_class
    from concept_eraser.metrics.recognition import recogniser

    judge, _ = recogniser(digits_bundle, 3)
    r = attack_class(digits_bundle, digits_bundle, 3, None, judge, steps=2, seeds=list(range(200, 210)),
                     sampling_steps=STEPS)
    assert r.asr >= 0.9 and r.asr_plain >= 0.9
    assert r.embeddings.shape == (10, digits_bundle.unet.class_embedding.weight.shape[1])
    # the hook is gone afterwards: the plain model is unchanged
    assert not digits_bundle.unet.class_embedding._forward_hooks


def test_class_attack_moves_the_vector_on_a_broken_embedding(digits_bundle):
    """Class 3's embedding replaced by class 7's: the attack optimises the vector back towards 3."""
    from concept_eraser.metrics.attack import attack_class
    from concept_eraser.metrics.recognition import recogniser

    edited = copy.deepcopy(digits_bundle)
    with torch.no_grad():
        w = edited.unet.class_embedding.weight
        w[3] = w[7]
    judge, _ = recogniser(digits_bundle, 3)
    r = attack_class(digits_bundle, edited, 3, None, judge, steps=4, lr=0.05, seeds=[300, 301, 302, 303],
                     sampling_steps=STEPS)
    assert r.asr_plain <= 0.25  # the edit works on the plain class
    assert np.mean([a["loss_end"] for a in r.per_attempt]) < np.mean([a["loss_start"] for a in r.per_attempt])
    assert not torch.allclose(r.embeddings[0], w[3].cpu())


def test_interference_identical_models_is_one(digits_bundle):
    from concept_eraser.metrics.interference import interference_matrix

    m = interference_matrix(digits_bundle, {"same": digits_bundle}, [3, 7], samples=3, steps=STEPS)
    assert m.cols == ["3", "7"] and m.after.shape == (1, 2)
    ok = m.before > 0
    assert ok.all() and np.allclose(m.ratio[0], 1.0)


def test_evaluate_identical_models_gives_zero(digits_bundle, tmp_path, monkeypatch):
    """Identical models: LPIPS (created AlexNet-shaped weights) and SSIM distance 0, UA = UA before (≈ 0)."""
    from torchvision.models import alexnet

    from concept_eraser.metrics.evaluate import evaluate_job
    from concept_eraser.metrics.lpips_retention import ALEXNET_FILE, ENV_VAR

    torch.manual_seed(0)
    state = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(state, tmp_path / ALEXNET_FILE)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / ALEXNET_FILE))
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    spec = JobSpec(model=ModelSource(path="digits"), concepts=[Concept(label=3)])
    job = evaluate_job(digits_bundle, digits_bundle, spec, JobContext(), leaks=True, samples=4, out_dir=tmp_path,
                       options={"steps": STEPS, "grid_seeds": [0, 1, 2], "leak_samples": 3, "attack_attempts": 4,
                                "attack_steps": 1})
    result = run_blocking(job)
    rep = result.value
    sc = rep["scores"]
    assert sc["lpips_retain"] == 0.0 and sc["ssim_distance_retain"] == pytest.approx(0.0, abs=1e-6)
    assert sc["ua"] == sc["ua_before"] and sc["ua"] <= 0.25
    assert sc["attack_asr/3"] >= 0.75
    leaks = rep["leaks"]
    assert leaks and all({"probe", "recognised", "leaked"} <= set(r) for r in leaks)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["versions"]["torch"] and data["models"]["original_sha256"] == digits_bundle.summary.sha256
    assert data["job"]["concepts"] == [{"text": None, "label": 3}]
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "per-cell LPIPS" in html and "<script" not in html
    assert "src='http" not in html  # self-contained


def test_evaluate_shapes_paraphrase_leaks_in_report(shapes_bundle, weak_striped, tmp_path, monkeypatch):
    from concept_eraser.metrics.evaluate import evaluate_job

    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONCEPT_ERASER_ALEXNET", str(tmp_path / "absent.pth"))
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text="striped")])
    rep = run_blocking(evaluate_job(shapes_bundle, weak_striped, spec, JobContext(), leaks=True, samples=2,
                                    out_dir=tmp_path, options={"steps": STEPS, "grid_seeds": [0, 1],
                                                               "leak_samples": 4, "attack_attempts": 2,
                                                               "attack_steps": 1}))
    rep = rep.value
    leaked = {r["probe"] for r in rep["leaks"] if r["leaked"]}
    assert "a red stripy circle" in leaked and "a red striped circle" not in leaked
    assert rep["scores"]["paraphrase_leak_rate"] > 0
    html = (tmp_path / "report.html").read_text()
    assert "SSIM distance (LPIPS unavailable)" in html
