"""shapes: a tiny but real Stable Diffusion trained from scratch on procedural captioned shapes.

AutoencoderKL (32x32 RGB -> 8x8x4 latent) + UNet2DConditionModel with cross-attention + CLIP text
encoder + a CLIP BPE tokenizer with a tiny vocabulary, saved as a StableDiffusionPipeline folder.

Recipe (fixed seed, deterministic data):
1. draw a fixed training set (shapes_data.make_dataset);
2. train the VAE (MSE + L1 reconstruction, tiny KL), set its scaling_factor = 1 / std(latents);
3. train the UNet and the text encoder jointly on the latents: epsilon prediction, SD's
   scaled-linear schedule, random caption templates with synonyms, 10% empty captions for
   classifier-free guidance, AdamW with warm-up and cosine decay, EMA of both networks.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from concept_eraser.engine.bundle import META_FILE
from concept_eraser.resources import models_dir
from concept_eraser.spec.events import Log, Progress, StageStarted
from concept_eraser.spec.files import replace_dir
from concept_eraser.spec.runloop import JobContext

from .shapes_data import SIZE, all_words, captions_for, make_dataset, vocabulary
from .shapes_judge import pick_device
from .shapes_tokenizer import MAX_LENGTH, write_tokenizer

DEFAULT_GUIDANCE = 3.0
DEFAULT_STEPS = 25
TEXT_DIM = 64


def make_vae(channels: tuple[int, int, int] = (16, 32, 32)):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=tuple(channels),
                         layers_per_block=1, latent_channels=4, norm_num_groups=min(16, channels[0] // 2),
                         sample_size=SIZE)


def make_unet(width: int = 32, layers: int = 1):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=4, out_channels=4, layers_per_block=layers,
        block_out_channels=(width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=min(16, width // 2),
    )


def make_text_encoder(tokenizer, layers: int = 3):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM,
                         num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, projection_dim=TEXT_DIM)
    return CLIPTextModel(cfg)


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _lr_lambda(warmup: int, steps: int):
    return lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


class _Ema:
    def __init__(self, *modules, decay: float) -> None:
        self.modules, self.decay = modules, decay
        self.shadow = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for m, sh in zip(self.modules, self.shadow, strict=True):
            for k, v in m.state_dict().items():
                if v.dtype.is_floating_point:
                    sh[k].lerp_(v, 1 - d)
                else:
                    sh[k].copy_(v)

    def copy_to(self) -> None:
        for m, sh in zip(self.modules, self.shadow, strict=True):
            m.load_state_dict(sh)


def train_vae(vae, x: torch.Tensor, steps: int, g: torch.Generator, ctx: JobContext, batch_size: int = 64,
              lr: float = 2e-3, kl_weight: float = 1e-6):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(100, steps // 10 + 1), steps))
    vae.train()
    running = None
    yield StageStarted("train_vae", total=steps)
    for step in range(steps):
        ctx.check_cancelled()
        xb = x[torch.randint(0, len(x), (batch_size,), generator=g).to(x.device)]
        post = vae.encode(xb).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(x.device)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, xb) + 0.5 * F.l1_loss(rec, xb) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            yield Progress("train_vae", step + 1, steps, {"loss": running})
    vae.eval()


@torch.no_grad()
def encode_all(vae, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(x), batch):
        post = vae.encode(x[i : i + batch]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def train_diffusion(unet, text_encoder, tokenizer, lat_mean, lat_std, labels, steps: int, g: torch.Generator,
                    rng: np.random.Generator, ctx: JobContext, batch_size: int = 64, lr: float = 1e-3,
                    caption_dropout: float = 0.1, ema_decay: float = 0.999):
    sched_cfg = make_scheduler()
    dev = lat_mean.device
    alphas = sched_cfg.alphas_cumprod.float().to(dev)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(200, steps // 10 + 1), steps))
    ema = _Ema(unet, text_encoder, decay=ema_decay)
    unet.train()
    text_encoder.train()
    running = None
    yield StageStarted("train_unet", total=steps)
    for step in range(steps):
        ctx.check_cancelled()
        idx = torch.randint(0, len(labels), (batch_size,), generator=g)
        caps = captions_for(labels[idx.numpy()], rng)
        idx = idx.to(dev)
        caps = ["" if rng.random() < caption_dropout else c for c in caps]
        ids = tokenizer(caps, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                        return_tensors="pt").input_ids.to(dev)
        z0 = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g).to(dev)
        t = torch.randint(0, len(alphas), (batch_size,), generator=g).to(dev)
        noise = torch.randn(z0.shape, generator=g).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        cond = text_encoder(ids)[0]
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            yield Progress("train_unet", step + 1, steps, {"loss": running, "lr": sched.get_last_lr()[0]})
    ema.copy_to()
    unet.eval()
    text_encoder.eval()


def _file_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def build_shapes(out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None, images: int = 12000,
                 vae_steps: int = 700, vae_batch: int = 32, unet_steps: int = 1800, batch_size: int = 64,
                 width: int = 32, unet_layers: int = 1, text_layers: int = 3, lr: float = 2e-3,
                 vae_channels: tuple[int, int, int] = (16, 32, 32)):
    """Train the shapes SD; yields StageStarted/Progress (loss), returns {seconds, stage seconds, sizes, path}."""
    from diffusers import StableDiffusionPipeline

    ctx = ctx or JobContext()
    out_dir = Path(out_dir or models_dir() / "shapes")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    yield StageStarted("data", total=None)
    imgs, labels = make_dataset(images, seed=seed * 1000 + 7)
    device = pick_device(ctx)
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)
    times = {"data": time.perf_counter() - t0}

    vae = make_vae(vae_channels).to(device)
    yield from train_vae(vae, x, vae_steps, g, ctx, batch_size=vae_batch, lr=3e-3)
    lat_mean, lat_std = encode_all(vae, x)
    scale = float(1.0 / lat_mean.std())
    vae.register_to_config(scaling_factor=scale)
    n_check = min(1024, len(x))
    with torch.no_grad():
        rec = torch.cat([vae.decode(lat_mean[i : min(i + 256, n_check)]).sample for i in range(0, n_check, 256)])
    vae_mse = float(F.mse_loss(rec, x[:n_check]))
    times["vae"] = time.perf_counter() - t0 - sum(times.values())
    yield Log("info", f"VAE trained: reconstruction MSE {vae_mse:.4f} ([-1, 1] scale), latent scale {scale:.3f}")

    # the temporary folder sits beside the target so the final rename never crosses file systems
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shapes-", dir=out_dir.parent))
    try:
        tokenizer = write_tokenizer(tmp / "tokenizer", all_words())
        text_encoder = make_text_encoder(tokenizer, layers=text_layers).to(device)
        unet = make_unet(width, unet_layers).to(device)
        yield from train_diffusion(unet, text_encoder, tokenizer, lat_mean * scale, lat_std * scale, labels,
                                   unet_steps, g, rng, ctx, batch_size=batch_size, lr=lr)
        times["unet"] = time.perf_counter() - t0 - sum(times.values())
        vae, unet, text_encoder = vae.cpu(), unet.cpu(), text_encoder.cpu()
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(tmp, safe_serialization=True)
        seconds = time.perf_counter() - t0
        meta = {
            "kind": "sd",
            "demo": "shapes",
            "default_guidance": DEFAULT_GUIDANCE,
            "default_steps": DEFAULT_STEPS,
            "default_scheduler": "ddim",
            "resolution": SIZE,
            "judge": "shapes-judge",
            "vocabulary": vocabulary(),
            "build": {"seed": seed, "device": str(device), "images": images, "vae_steps": vae_steps, "vae_batch": vae_batch,
                      "unet_steps": unet_steps,
                      "batch_size": batch_size, "vae_channels": list(vae_channels), "width": width, "unet_layers": unet_layers,
                      "text_layers": text_layers, "lr": lr, "caption_dropout": 0.1, "ema_decay": 0.999,
                      "vae_reconstruction_mse": round(vae_mse, 5), "seconds": round(seconds, 1),
                      "stage_seconds": {k: round(v, 1) for k, v in times.items()}},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sizes = {p.name: round(_file_mb(out_dir / p.name), 2) for p in out_dir.iterdir() if p.is_dir()}
    yield Log("info", f"shapes model written to {out_dir} in {seconds:.0f} s ({_file_mb(out_dir):.1f} MB)")
    return {"seconds": seconds, "stage_seconds": times, "path": str(out_dir), "mb": _file_mb(out_dir),
            "component_mb": sizes, "vae_reconstruction_mse": vae_mse,
            "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in
                           (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}}
