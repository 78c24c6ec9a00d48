"""Diffusion-classifier concept score for any Stable Diffusion model, offline, with the *original* model as judge.

For each generated image: encode it to latents with the original VAE; at fixed timesteps (default
10, evenly spread over [100, 900]) add fixed noises; let the original UNet predict the noise
conditioned on the concept prompt and on the anchor prompt (or the empty prompt). With the
per-image error err(c) = mean over timesteps and noises of ||prediction(c) - target||^2 / numel,

    score = err(anchor) - err(concept)

is positive when conditioning on the concept explains the image better, i.e. the image looks like
the concept to the original model (Li et al., "Your diffusion model is secretly a zero-shot
classifier"). The result holds the per-image scores, their mean, and the share of images where the
concept wins (score > 0). Needs no weights beyond the model itself: pass the original model's
bundle (`engine.loading.load_model`), not the unlearned one.

Prompts: with `prompts=None` the concept text and the anchor text are the two conditions. With
`prompts` (one per image, e.g. the prompts the images were generated from), the concept condition
is each prompt and the anchor condition is that prompt with the concept word(s) replaced by the
anchor (or removed when the anchor is empty) — a two-class diffusion classifier in context.
Noises are shared by all images and both conditions (paired comparison); results do not depend on
the batch size beyond float rounding. SD 1.x/2.x-style models (including the shapes demo); SDXL is
not supported yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from concept_eraser.spec.runloop import UserError

KEY = "diffusion-classifier"


@dataclass(frozen=True)
class ClassifierScore:
    key: str
    mean: float  # mean of per-image scores (positive: looks like the concept)
    win_rate: float  # share of images with score > 0
    per_image: np.ndarray  # (N,) float64
    timesteps: tuple[int, ...]
    concept: str
    anchor: str
    description: str


def spread_timesteps(n: int = 10, low: int = 100, high: int = 900) -> tuple[int, ...]:
    return tuple(int(round(t)) for t in np.linspace(low, high, n))


def anchor_prompt(prompt: str, concept: str, anchor: str) -> str:
    """`prompt` with the concept word(s) replaced by the anchor (or removed), whitespace tidied."""
    out = re.sub(rf"\b{re.escape(concept)}\b", anchor, prompt, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", out).strip()


@torch.no_grad()
def _encode_text(bundle, prompts: list[str]) -> torch.Tensor:
    tok = bundle.tokenizer(prompts, padding="max_length", max_length=bundle.tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
    return bundle.text_encoder(tok.input_ids.to(bundle.device))[0].to(bundle.dtype)


@torch.no_grad()
def _encode_images(bundle, images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    size = bundle.summary.resolution
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.to(bundle.device, bundle.dtype)
    latents = bundle.vae.encode(x).latent_dist.mean
    return latents * bundle.vae.config.scaling_factor


@torch.no_grad()
def diffusion_classifier(bundle, images: np.ndarray, concept: str, anchor: str = "",
                         prompts: Sequence[str] | None = None, timesteps: Sequence[int] | int = 10,
                         noises: int = 1, seed: int = 0, batch: int = 16) -> ClassifierScore:
    """Score uint8 images (N, H, W, 3) for `concept` vs `anchor` with the original model `bundle`."""
    if bundle.summary.kind != "sd":
        raise UserError(f"the diffusion classifier needs a Stable Diffusion 1.x/2.x model, not {bundle.summary.kind}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    if prompts is not None and len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    ts = spread_timesteps(timesteps) if isinstance(timesteps, int) else tuple(int(t) for t in timesteps)
    sched = bundle.scheduler
    n_train = sched.config.num_train_timesteps
    if any(not 0 <= t < n_train for t in ts):
        raise ValueError(f"timesteps must be in [0, {n_train - 1}], got {ts}")
    pred_type = sched.config.prediction_type
    alphas = sched.alphas_cumprod.to(torch.float64)

    if prompts is None:
        pos, neg = [concept] * len(images), [anchor] * len(images)
    else:
        pos = list(prompts)
        neg = [anchor_prompt(p, concept, anchor) for p in prompts]
        missing = [p for p, q in zip(pos, neg, strict=True) if p.strip() == q]
        if missing:
            raise ValueError(f"the prompt {missing[0]!r} does not contain the concept {concept!r}")
    unet = bundle.unet
    scores = []
    noise_all = None
    for i in range(0, len(images), batch):
        lat = _encode_images(bundle, images[i : i + batch])
        if noise_all is None:
            g = torch.Generator("cpu").manual_seed(seed)
            noise_all = torch.randn((len(ts), noises, *lat.shape[1:]), generator=g).to(bundle.device, bundle.dtype)
        n = len(lat)
        cond = torch.cat([_encode_text(bundle, pos[i : i + n]), _encode_text(bundle, neg[i : i + n])])
        err = torch.zeros(2, n, dtype=torch.float64, device=bundle.device)
        for k, t in enumerate(ts):
            a = alphas[t]
            for j in range(noises):
                eps = noise_all[k, j].expand_as(lat)
                noisy = (a.sqrt() * lat + (1 - a).sqrt() * eps).to(bundle.dtype)
                if pred_type == "epsilon":
                    target = eps
                elif pred_type == "v_prediction":
                    target = (a.sqrt() * eps - (1 - a).sqrt() * lat).to(bundle.dtype)
                else:
                    target = lat
                tt = torch.full((2 * n,), t, device=bundle.device, dtype=torch.long)
                pred = unet(torch.cat([noisy, noisy]), tt, encoder_hidden_states=cond).sample
                e = ((pred.float() - torch.cat([target, target]).float()) ** 2).flatten(1).mean(1).double()
                err += e.view(2, n)
        err /= len(ts) * noises
        scores.append((err[1] - err[0]).cpu().numpy())
    per_image = np.concatenate(scores)
    what = f"'{concept}' vs '{anchor or '(empty prompt)'}'" + (" in each image's prompt" if prompts is not None else "")
    desc = (f"diffusion classifier with the original model ({bundle.summary.architecture}, "
            f"{bundle.summary.resolution} px): {what}, {len(ts)} timesteps {ts[0]}-{ts[-1]} x {noises} fixed "
            f"noise(s) (seed {seed}), {len(per_image)} images; score = err(anchor) - err(concept)")
    return ClassifierScore(KEY, float(per_image.mean()), float((per_image > 0).mean()), per_image, ts, concept,
                           anchor, desc)
