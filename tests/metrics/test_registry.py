"""The explicit metric registry: every entry describes itself and names its module."""

import importlib

import torch

from concept_eraser.metrics import METRICS, available_metrics
from concept_eraser.spec import MetricInfo
from concept_eraser.spec.summary import ModelSummary

MODULES = {"lpips": "lpips_retention", "ssim-distance": "ssim_distance", "judged": "judged",
           "judge-fid": "judge_fid", "diffusion-classifier": "diffusion_classifier",
           "clip-zero-shot": "clip_zero_shot"}


def _summary(kind="sd", name=None):
    return ModelSummary(kind=kind, architecture="x", prediction_type="epsilon", resolution=32, dtype="float32",
                        parameters=1, sha256="0", source="x", name=name)


def test_registry_entries():
    assert set(METRICS) == set(MODULES)
    for key, info in METRICS.items():
        assert isinstance(info, MetricInfo) and info.key == key and info.title and len(info.description) > 80
        importlib.import_module(f"concept_eraser.metrics.{MODULES[key]}")
    assert "64 px" in METRICS["lpips"].description and "alexnet-owt-7be5be79.pth" in METRICS["lpips"].weights[0]


def test_available_metrics_follow_model_and_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("CONCEPT_ERASER_ALEXNET", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    keys = {m.key for m in available_metrics(_summary("sd", "shapes"))}
    assert keys == {"ssim-distance", "judged", "judge-fid", "diffusion-classifier", "clip-zero-shot"}
    assert {m.key for m in available_metrics(_summary("sd"))} == {"ssim-distance", "diffusion-classifier",
                                                                  "clip-zero-shot"}
    assert {m.key for m in available_metrics(_summary("ddpm-cond", "digits"))} == {"ssim-distance", "judged",
                                                                                    "judge-fid"}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    assert "lpips" in {m.key for m in available_metrics()}
