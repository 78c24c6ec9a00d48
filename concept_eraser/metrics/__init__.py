"""Metrics: one file per metric, registered here by an explicit list (no folder scanning).

    key                    module                   what
    lpips                  lpips_retention.py       AlexNet-LPIPS between same-seed before/after retain cells
    ssim-distance          ssim_distance.py         1 - SSIM between the same cells (always available)
    judged                 judged.py                demo judges: UA, PUL, IRA/CRA, per-class accuracy and shares
    judge-fid              judge_fid.py             Fréchet distance in the demo judge's features vs real images
    diffusion-classifier   diffusion_classifier.py  concept score with the original SD model as judge

Helpers, not metrics: pairs.py (PairResult, same-seed pairing and resizing for lpips/ssim) and
retention.py (retention_scores: both paired metrics as MetricReady events for the unlearn job).
Importing this package is cheap (no torch); the metric modules import torch when used.
"""

from __future__ import annotations

from concept_eraser.spec.registry import MetricInfo
from concept_eraser.spec.summary import ModelSummary

METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo(
            key="lpips",
            title="LPIPS retention",
            description=("AlexNet-LPIPS v0.1 (lpips package linear weights) between same-seed original and "
                         "unlearned images of the retain rows; images resized to 64 px short side (256 px for "
                         "images larger than 64 px); mean, per prompt and per cell over rows x seeds of the grid. "
                         "0 = identical. Unavailable (never substituted) without the AlexNet backbone file."),
            higher_is_better=False,
            weights=("alexnet-owt-7be5be79.pth (torch hub cache checkpoints/, or CONCEPT_ERASER_ALEXNET)",),
        ),
        MetricInfo(
            key="ssim-distance",
            title="SSIM distance",
            description=("1 - SSIM (torchmetrics, Gaussian 11x11, sigma 1.5) between same-seed original and "
                         "unlearned RGB images of the retain rows, at the LPIPS resolution (64 px short side, 256 px "
                         "for larger images); mean, per prompt and per cell over rows x seeds. 0 = identical."),
            higher_is_better=False,
        ),
        MetricInfo(
            key="judged",
            title="Judged erasure and retention (demo models)",
            description=("Shipped judges (digits-judge 16 px CNN, shapes-judge 32 px multi-head CNN) on same-seed "
                         "grids of the evaluation plan (default 100 seeds per row): unlearning accuracy UA on "
                         "forget rows, per-class accuracy and retained-class drop, in-/cross-domain retain accuracy "
                         "IRA/CRA (absolute and relative to the original), unconditional class shares and PUL."),
            higher_is_better=True,
            weights=("resources/judges/digits-judge.safetensors", "resources/judges/shapes-judge.safetensors"),
        ),
        MetricInfo(
            key="judge-fid",
            title="Judge-feature FID (demo models)",
            description=("Fréchet distance between retain-row samples and as many real images of the same classes "
                         "(scikit-learn digits / procedural shapes) in the demo judge's 64-d penultimate features "
                         "(16 px digits, 32 px shapes); compare values made with the same sample counts only."),
            higher_is_better=False,
            weights=("resources/judges/digits-judge.safetensors", "resources/judges/shapes-judge.safetensors"),
        ),
        MetricInfo(
            key="diffusion-classifier",
            title="Diffusion-classifier concept score",
            description=("Original SD model as judge: VAE latents of each generated image at the model's resolution, "
                         "10 timesteps spread over 100-900 with fixed noises; score = denoising error with the "
                         "anchor (or empty) prompt minus with the concept prompt, averaged (positive = looks like the "
                         "concept), and the share of images where the concept wins. No extra weights."),
            higher_is_better=False,
        ),
        MetricInfo(
            key="clip-zero-shot",
            title="CLIP zero-shot concept score",
            description=("A local CLIP folder (transformers CLIPModel, given with evaluate --set clip_dir=PATH): "
                         "softmax of each image's similarity to the concept vs the anchor text (3 prompt templates "
                         "averaged) at CLIP's input size; mean probability of the concept and the share of images "
                         "where it wins, before and after. Never downloaded."),
            higher_is_better=False,
            weights=("a local CLIP model folder (clip_dir)",),
        ),
    )
}

_JUDGED_DEMOS = ("digits", "shapes")


def available_metrics(summary: ModelSummary | None = None) -> list[MetricInfo]:
    """The metrics that can run now (for this model, when given): LPIPS only with its backbone file,
    judged/judge-fid only for the bundled demo models, the diffusion classifier only for SD models."""
    from .lpips_retention import available as lpips_available

    out = []
    for key, info in METRICS.items():
        if key == "lpips" and not lpips_available():
            continue
        if summary is not None:
            if key in ("judged", "judge-fid") and summary.name not in _JUDGED_DEMOS:
                continue
            if key == "diffusion-classifier" and summary.kind != "sd":
                continue
            if key == "clip-zero-shot" and summary.conditioning != "text":
                continue
        out.append(info)
    return out


__all__ = ["METRICS", "available_metrics"]
