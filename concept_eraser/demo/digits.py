"""digits: a class-conditional DDPM with a null class, trained on scikit-learn's digits at 16x16.

Classifier-free guidance (Ho & Salimans 2022): the label is replaced by the null class 20% of the
time, so one network gives conditional and unconditional predictions; unconditional sampling uses
the null class. Cosine schedule, epsilon prediction, AdamW, EMA of the weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from concept_eraser.engine.bundle import META_FILE
from concept_eraser.resources import models_dir
from concept_eraser.spec.events import Log, Progress, StageStarted
from concept_eraser.spec.files import replace_dir
from concept_eraser.spec.runloop import JobContext

from .digits_data import CLASS_NAMES, SIZE, load_digits_tensor

NULL_CLASS = 10
DEFAULT_GUIDANCE = 1.5
DEFAULT_STEPS = 30


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=SIZE,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=NULL_CLASS + 1,
        norm_num_groups=8,
    )


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         clip_sample=True)


def build_digits(out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None, steps: int = 3000,
                 batch_size: int = 64, lr: float = 2e-3, label_dropout: float = 0.2, ema_decay: float = 0.999):
    """Train the digits DDPM; yields Progress (loss), returns {seconds, path, steps}."""
    from diffusers import DDPMPipeline

    ctx = ctx or JobContext()
    out_dir = Path(out_dir or models_dir() / "digits")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_digits_tensor()
    x = x * 2 - 1  # the model works in [-1, 1]
    unet = make_unet()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    scheduler = make_scheduler()
    alphas = scheduler.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = 200
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps))).item() * 0.95 + 0.05)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    yield StageStarted("train", total=steps)
    unet.train()
    running = None
    for step in range(steps):
        ctx.check_cancelled()
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        x0, labels = x[idx], y[idx].clone()
        labels[torch.rand(batch_size, generator=g) < label_dropout] = NULL_CLASS
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t, class_labels=labels).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].lerp_(v, 1 - decay)
                else:
                    ema[k].copy_(v)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            yield Progress("train", step + 1, steps, {"loss": running, "lr": sched.get_last_lr()[0]})
    unet.load_state_dict(ema)
    unet.eval()
    # the temporary folder sits beside the target so the final rename never crosses file systems
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=out_dir.parent))
    try:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        meta = {
            "kind": "ddpm-cond",
            "demo": "digits",
            "null_class": NULL_CLASS,
            "class_names": list(CLASS_NAMES),
            "default_guidance": DEFAULT_GUIDANCE,
            "default_steps": DEFAULT_STEPS,
            "channels": 1,
            "judge": "digits-judge",
            "build": {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr,
                      "label_dropout": label_dropout, "ema_decay": ema_decay,
                      "seconds": round(time.perf_counter() - t0, 1)},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    yield Log("info", f"digits model written to {out_dir} in {seconds:.0f} s")
    return {"seconds": seconds, "path": str(out_dir), "steps": steps}
