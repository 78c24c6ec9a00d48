"""Shared denoising machinery for methods and metrics, the same for DDPMs and Stable Diffusion.

Conditioning items are `str` (a prompt), `int` (a class label) or `None` (∅: the empty prompt or
the null class). `encode` turns a list of items into a `Cond` batch; `predict` runs the UNet in the
model's own output space (epsilon, v or sample); `target` gives the matching regression target;
`rollout` runs DDIM with classifier-free guidance from noise to an intermediate step (ESD,
AdvUnlearn). x0 lives in the UNet's space: pixels in [-1, 1] for DDPMs, scaled VAE latents for SD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from concept_eraser.spec.runloop import UserError

from .bundle import ModelBundle

CondItem = str | int | None


@dataclass
class Cond:
    """One batch of conditioning in the form the UNet takes."""

    labels: torch.Tensor | None = None  # ddpm-cond: (B,)
    hidden: torch.Tensor | None = None  # sd/sdxl: encoder_hidden_states (B, L, D)
    text_embeds: torch.Tensor | None = None  # sdxl: pooled text embeddings (B, D2)
    time_ids: torch.Tensor | None = None  # sdxl: (B, 6)

    def __len__(self) -> int:
        for v in (self.labels, self.hidden):
            if v is not None:
                return v.shape[0]
        return 0

    def _map(self, fn) -> Cond:
        return Cond(*(None if v is None else fn(v) for v in (self.labels, self.hidden, self.text_embeds, self.time_ids)))

    def repeat(self, n: int) -> Cond:
        """Each row repeated n times in place (row0 x n, row1 x n, ...)."""
        return self._map(lambda v: v.repeat_interleave(n, dim=0))

    def expand(self, n: int) -> Cond:
        """A one-row Cond broadcast to n rows."""
        return self._map(lambda v: v.expand(n, *v.shape[1:]) if v.shape[0] == 1 else v)

    def detach(self) -> Cond:
        return self._map(lambda v: v.detach())

    @staticmethod
    def cat(conds: Sequence[Cond]) -> Cond:
        fields = zip(*((c.labels, c.hidden, c.text_embeds, c.time_ids) for c in conds), strict=True)
        return Cond(*(None if vs[0] is None else torch.cat(vs) for vs in fields))


def _text_embeddings(encoder, tokenizer, prompts: list[str], device, penultimate: bool,
                     inputs_embeds_hook=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    if inputs_embeds_hook is not None:
        out = inputs_embeds_hook(encoder, ids)
    else:
        out = encoder(ids, output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out[0]
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


def token_ids(bundle: ModelBundle, prompts: list[str]) -> torch.Tensor:
    tok = bundle.tokenizer
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids.to(bundle.device)


def encode(bundle: ModelBundle, items: Sequence[CondItem], text_encoder: torch.nn.Module | None = None,
           hidden_override: torch.Tensor | None = None) -> Cond:
    """Conditioning for `items`. `text_encoder` replaces the bundle's (AdvUnlearn trains a copy's layers);
    `hidden_override` (B, L, D) skips the text encoder entirely (soft-prompt attacks)."""
    s = bundle.summary
    dev = bundle.device
    if s.conditioning == "none":
        if any(i is not None for i in items):
            raise UserError("unconditional DDPMs take no concept; give example images instead")
        return Cond()
    if s.conditioning == "class":
        if any(isinstance(i, str) for i in items):
            raise UserError("class-conditional models take class labels, not text")
        labels = [s.null_class if i is None else int(i) for i in items]
        return Cond(labels=torch.tensor(labels, device=dev, dtype=torch.long))
    prompts = ["" if i is None else str(i) for i in items]
    if any(isinstance(i, int) for i in items):
        raise UserError("text-conditioned models take concept texts, not class labels")
    te = text_encoder or bundle.text_encoder
    if s.kind == "sd":
        if hidden_override is not None:
            return Cond(hidden=hidden_override)
        hidden, _ = _text_embeddings(te, bundle.tokenizer, prompts, dev, penultimate=False)
        return Cond(hidden=hidden.to(bundle.dtype))
    # SDXL: both encoders' penultimate states side by side; pooled from the second; size/crop ids.
    h1, _ = _text_embeddings(te, bundle.tokenizer, prompts, dev, penultimate=True)
    h2, pooled = _text_embeddings(bundle.text_encoder_2, bundle.tokenizer_2, prompts, dev, penultimate=True)
    hidden = hidden_override if hidden_override is not None else torch.cat([h1, h2], dim=-1)
    r = s.resolution
    time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=dev, dtype=bundle.dtype).expand(len(prompts), 6)
    return Cond(hidden=hidden.to(bundle.dtype), text_embeds=pooled.to(bundle.dtype), time_ids=time_ids)


def predict(bundle: ModelBundle, x_t: torch.Tensor, t: torch.Tensor | int, cond: Cond,
            unet: torch.nn.Module | None = None) -> torch.Tensor:
    """The UNet's output (in the model's prediction type) for a batch; `t` is a scalar or (B,)."""
    unet = unet or bundle.unet
    if not torch.is_tensor(t):
        t = torch.tensor(t, device=x_t.device)
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    t = t.to(x_t.device)
    x_t = x_t.to(bundle.dtype)  # schedule arithmetic in float32 upcasts latents of a half-precision model
    kind = bundle.summary.kind
    if kind == "ddpm":
        return unet(x_t, t).sample
    if kind == "ddpm-cond":
        return unet(x_t, t, class_labels=cond.labels).sample
    if kind == "sd":
        return unet(x_t, t, encoder_hidden_states=cond.hidden).sample
    return unet(x_t, t, encoder_hidden_states=cond.hidden,
                added_cond_kwargs={"text_embeds": cond.text_embeds, "time_ids": cond.time_ids}).sample


def predict_cfg(bundle: ModelBundle, x_t: torch.Tensor, t, cond: Cond, uncond: Cond, guidance: float) -> torch.Tensor:
    """Classifier-free guided prediction in one batched forward."""
    if guidance == 1.0:
        return predict(bundle, x_t, t, cond)
    both = predict(bundle, torch.cat([x_t, x_t]), t if not torch.is_tensor(t) or t.ndim == 0 else torch.cat([t, t]),
                   Cond.cat([cond, uncond]))
    c, u = both.chunk(2)
    return u + guidance * (c - u)


def alphas_cumprod(bundle: ModelBundle) -> torch.Tensor:
    return bundle.scheduler.alphas_cumprod.to(bundle.device, torch.float32)


def add_noise(bundle: ModelBundle, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod(bundle)[t].view(-1, *([1] * (x0.ndim - 1)))
    return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(x0.dtype)


def target(bundle: ModelBundle, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses to for (x0, noise, t) in its own prediction type."""
    pt = bundle.summary.prediction_type
    if pt == "epsilon":
        return noise
    if pt == "v_prediction":
        a = alphas_cumprod(bundle)[t].view(-1, *([1] * (x0.ndim - 1)))
        return (a.sqrt() * noise - (1 - a).sqrt() * x0).to(x0.dtype)
    if pt == "sample":
        return x0
    raise UserError(f"unsupported prediction type {pt!r}")


def to_eps(bundle: ModelBundle, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Convert a model output to an epsilon prediction (identity for epsilon models)."""
    pt = bundle.summary.prediction_type
    if pt == "epsilon":
        return out
    a = alphas_cumprod(bundle)[t].view(-1, *([1] * (x_t.ndim - 1)))
    if pt == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * x_t
    return (x_t - a.sqrt() * out) / (1 - a).sqrt()


def to_x0(bundle: ModelBundle, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod(bundle)[t].view(-1, *([1] * (x_t.ndim - 1)))
    eps = to_eps(bundle, out, x_t, t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x_shape(bundle: ModelBundle) -> tuple[int, int, int]:
    """(C, H, W) of x0 at the model's native size."""
    unet = bundle.unet
    size = unet.config.sample_size
    size = size if isinstance(size, int) else size[0]
    return unet.config.in_channels, size, size


def noise_like(shape: tuple[int, ...], generator: torch.Generator, bundle: ModelBundle) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from `generator` (reproducible on every device)."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(bundle.device, bundle.dtype)


def random_timesteps(n: int, generator: torch.Generator, bundle: ModelBundle, low: int = 0,
                     high: int | None = None) -> torch.Tensor:
    high = high or bundle.scheduler.config.num_train_timesteps
    return torch.randint(low, high, (n,), generator=generator).to(bundle.device)


@torch.no_grad()
def rollout(bundle: ModelBundle, cond: Cond, guidance: float, k: int, n_steps: int, generator: torch.Generator,
            batch: int = 1, uncond: Cond | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM with CFG from pure noise for the first k of n_steps steps; returns (x_k, t_k) with t_k the
    training timestep whose noise level x_k has (the next step's timestep)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(bundle.scheduler.config)
    sched.set_timesteps(n_steps, device=bundle.device)
    if not 0 <= k < n_steps:
        raise UserError(f"roll-out step {k} is outside 0..{n_steps - 1}")
    uncond = uncond if uncond is not None else encode(bundle, [None] * len(cond))
    cond, uncond = cond.expand(batch), uncond.expand(batch)
    x = noise_like((batch, *x_shape(bundle)), generator, bundle) * sched.init_noise_sigma
    for t in sched.timesteps[:k]:
        out = predict_cfg(bundle, sched.scale_model_input(x, t), t, cond, uncond, guidance)
        x = sched.step(out, t, x).prev_sample
    t_k = sched.timesteps[k].to(bundle.device).expand(batch)
    return x, t_k


@torch.no_grad()
def images_to_x0(bundle: ModelBundle, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, C, H, W) pixels in [-1, 1] at the model's size -> x0 in the UNet's space (VAE latents for SD)."""
    images = images.to(bundle.device, bundle.dtype)
    if bundle.vae is None:
        return images
    dist = bundle.vae.encode(images).latent_dist
    lat = dist.sample(generator=generator) if generator is not None else dist.mean
    return lat * bundle.vae.config.scaling_factor


@torch.no_grad()
def x0_to_images(bundle: ModelBundle, x0: torch.Tensor) -> torch.Tensor:
    """Inverse of images_to_x0: pixels in [-1, 1]."""
    if bundle.vae is None:
        return x0.clamp(-1, 1)
    return bundle.vae.decode((x0 / bundle.vae.config.scaling_factor).to(bundle.dtype)).sample.clamp(-1, 1)
