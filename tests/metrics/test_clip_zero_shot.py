"""CLIP zero-shot from a local folder: a tiny CLIPModel written here, loaded offline, scores shaped right."""

import numpy as np
import pytest

from concept_eraser.spec.runloop import UserError


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPModel

    from concept_eraser.engine.clip_tokenizer import load_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    tok = load_clip_tokenizer()
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_scores_images_offline(tiny_clip):
    from concept_eraser.metrics.clip_zero_shot import clip_zero_shot, load_clip

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 24, 24, 3), dtype=np.uint8)
    clip = load_clip(tiny_clip)
    res = clip_zero_shot(clip, images, "striped", ["solid", "outlined"])
    assert res.per_image.shape == (5,)
    assert np.all((res.per_image > 0) & (res.per_image < 1))
    assert 0.0 <= res.win_rate <= 1.0
    assert res.mean_prob == pytest.approx(float(res.per_image.mean()))
    again = clip_zero_shot(tiny_clip, images[:2], "striped", ["solid", "outlined"], batch=1)
    np.testing.assert_allclose(again.per_image, res.per_image[:2], rtol=1e-5, atol=1e-6)  # batching-free
    swapped = clip_zero_shot(clip, images, "solid", ["striped"], templates=("{}",))
    direct = clip_zero_shot(clip, images, "striped", ["solid"], templates=("{}",))
    np.testing.assert_allclose(swapped.per_image, 1 - direct.per_image, rtol=1e-5, atol=1e-6)


def test_missing_folder_is_one_line(tmp_path):
    from concept_eraser.metrics.clip_zero_shot import clip_zero_shot

    with pytest.raises(UserError, match="no config.json"):
        clip_zero_shot(tmp_path / "nothing", np.zeros((1, 8, 8, 3), np.uint8), "a", ["b"])
    with pytest.raises(UserError, match="at least one anchor"):
        clip_zero_shot(tmp_path, np.zeros((1, 8, 8, 3), np.uint8), "a", [])


def test_evaluate_reports_clip_scores_with_a_local_folder(tiny_clip, tmp_path, capsys, monkeypatch):
    import json

    from concept_eraser.cli import main

    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    rc = main(["evaluate", "--original", "shapes", "--edited", "shapes", "--forget", "striped",
               "--samples", "0", "--set", "steps=3", "--set", "grid_seeds=[0, 1]", "--set", f"clip_dir={tiny_clip}",
               "--out", str(tmp_path / "rep")])
    assert rc == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "rep" / "report.json").read_text())["scores"]
    # identical models: the same images before and after, so the same CLIP scores
    assert scores["clip_prob_before/striped"] == pytest.approx(scores["clip_prob_after/striped"])
    assert 0.0 <= scores["clip_win_after/striped"] <= 1.0
