"""One-step generators (SFD/SiD): generate x0 from noise with a single UNet call, sample grids, save folders.

A one-step model is an ordinary diffusers folder (UNet + scheduler) whose `concept_eraser.json` says
`"one_step": {"t_init": T, "sigma_init": s}`. Its UNet is used once, at timestep T, on pure noise
x_init = s·z (z ~ N(0, I)); the output is read as the model's x0 estimate
    x_g = (x_init − √(1−ᾱ_T) ε(x_init, T, c)) / √ᾱ_T            (epsilon models; `denoise.to_x0` in general)
which is how the SFD/SiD generator is defined (official code: `run_generator`, with s = √(1−ᾱ_T)).

On Stable Diffusion the same holds in the VAE's latent space: z is the cell's initial latent noise, the
UNet is conditioned on the prompt's text embedding, and x_g (scaled latents) is decoded by the VAE.

`sample_grid` dispatches here when `bundle.meta` has "one_step": same rows, same seeds, same per-cell
CPU generators (the cell's z is the first draw of its seed, like the first noise of a multi-step
grid), one forward per batch. Guidance: the meta's "guidance", default 1 (none: the distilled generator
has the teacher's guidance baked in, as digits-onestep and shapes-onestep do). SFD's `gen_guidance` option
makes a classifier-free guided generator instead (G(z, c) combines the UNet's outputs on c and ∅ in one
batched forward); on shapes it was no better (stage-1 colour judged 57% vs 66% unguided at lr 2e-4).

Outside this app (diffusers only): an SD one-step folder is saved with an EulerDiscreteScheduler
(timestep_spacing "trailing"), with which one Euler step at t_init is exactly x_g:
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe(prompt, timesteps=[t_init], guidance_scale=g)   # t_init, g = "guidance" from concept_eraser.json
(Euler starts from z·σ with σ = √((1−ᾱ)/ᾱ), feeds the UNet z·σ/√(σ²+1) = √(1−ᾱ)·z = x_init, and its
step z·σ − σ·ε equals (x_init − √(1−ᾱ) ε)/√ᾱ, with the pipeline's CFG on ε as in `generate`.) This holds for
sigma_init = √(1−ᾱ_{t_init}), the default.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import torch

from concept_eraser.spec.events import Event, Grid, Progress, StageStarted
from concept_eraser.spec.files import replace_dir
from concept_eraser.spec.jobspec import SamplingSpec
from concept_eraser.spec.runloop import JobContext

from .bundle import META_FILE, ModelBundle
from .denoise import Cond, alphas_cumprod, predict, to_x0

ONE_STEP = "one_step"


def one_step_meta(bundle: ModelBundle) -> dict | None:
    m = bundle.meta.get(ONE_STEP) if bundle.meta else None
    return m if isinstance(m, dict) else None


def default_sigma(bundle: ModelBundle, t_init: int) -> float:
    """σ of the generator's input noise: √(1−ᾱ_{t_init}) (the official SFD/SiD DDPM generator)."""
    return float((1 - alphas_cumprod(bundle)[t_init]).sqrt())


def generate(bundle: ModelBundle, unet: torch.nn.Module, z: torch.Tensor, cond: Cond, t_init: int,
             sigma_init: float, guidance: float = 1.0, uncond: Cond | None = None) -> torch.Tensor:
    """x_g = G(z, c): one UNet call at t_init on x_init = sigma_init·z, read as x0. Differentiable.

    `guidance` ≠ 1 makes the generator classifier-free guided (one batched call on c and ∅, combined in the
    model's output space like a guided sampler): G(z, c) = to_x0(out_∅ + w (out_c − out_∅))."""
    x_init = z * sigma_init
    t = torch.full((z.shape[0],), t_init, device=z.device, dtype=torch.long)
    if guidance == 1.0:
        out = predict(bundle, x_init, t, cond, unet=unet)
    else:
        both = predict(bundle, torch.cat([x_init, x_init]), torch.cat([t, t]), Cond.cat([cond, uncond]), unet=unet)
        c, u = both.chunk(2)
        out = u + guidance * (c - u)
    return to_x0(bundle, out, x_init, t)


def sample_one_step(bundle: ModelBundle, spec: SamplingSpec, ctx: JobContext) -> Generator[Event, None, Grid]:
    """Same-seed grid of a one-step model (class-conditional or unconditional DDPMs, Stable Diffusion)."""
    from .denoise import encode, x0_to_images
    from .sampling import _noise, cells_per_pass, check_rows, to_uint8

    check_rows(bundle, spec.rows)
    s = bundle.summary
    meta = one_step_meta(bundle) or {}
    t_init = int(meta["t_init"])
    sigma = float(meta.get("sigma_init", default_sigma(bundle, t_init)))
    cells = [(r, c) for r in range(len(spec.rows)) for c in range(len(spec.seeds))]
    n = cells_per_pass(bundle, spec)
    batches = [cells[i : i + n] for i in range(0, len(cells), n)]
    h, w = spec.height or s.resolution, spec.width or spec.height or s.resolution
    factor = 2 ** (len(bundle.vae.config.block_out_channels) - 1) if bundle.vae is not None else 1
    out = {}
    yield StageStarted("sample", total=len(batches))
    for b, batch in enumerate(batches):
        ctx.check_cancelled()
        rows = [spec.rows[r] for r, _ in batch]
        gens = [torch.Generator("cpu").manual_seed(spec.seeds[c]) for _, c in batch]
        z = _noise(gens, (bundle.unet.config.in_channels, h // factor, w // factor), bundle.device, bundle.dtype)
        cond = Cond()
        with torch.no_grad():
            if s.conditioning == "class":
                cond = Cond(labels=torch.tensor([s.null_class if r.label is None else r.label for r in rows],
                                                device=bundle.device))
            elif s.conditioning == "text":
                cond = encode(bundle, [r.prompt if r.prompt is not None else None for r in rows])
            g = float(meta.get("guidance", 1.0))
            uncond = encode(bundle, [None] * len(rows)) if g != 1.0 else None
            x0 = generate(bundle, bundle.unet, z, cond, t_init, sigma, g, uncond)
            images = x0_to_images(bundle, x0)
        for cell, img in zip(batch, to_uint8(images), strict=True):
            out[cell] = img
        yield Progress("sample", b + 1, len(batches))
    import numpy as np

    grid = np.stack([np.stack([out[(r, c)] for c in range(len(spec.seeds))]) for r in range(len(spec.rows))])
    return Grid(grid, tuple(row.describe(s.class_names) for row in spec.rows), tuple(spec.seeds))


def one_step_scheduler(bundle: ModelBundle):
    """SD: the scheduler saved with a one-step folder (see the module docstring); same ᾱ as the teacher's."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(bundle.scheduler.config, timestep_spacing="trailing")


def one_step_pipeline(bundle: ModelBundle, unet: torch.nn.Module):
    """SD: a pipeline of the bundle's parts with `unet` (the generator) and the one-step scheduler."""
    return type(bundle.pipe)(**{**bundle.pipe.components, "unet": unet, "scheduler": one_step_scheduler(bundle)})


def save_one_step(bundle: ModelBundle, unet: torch.nn.Module, out_dir: Path, t_init: int, sigma_init: float,
                  extra_meta: dict | None = None, extra_modules: dict[str, torch.nn.Module] | None = None,
                  half: bool = False, guidance: float = 1.0) -> Path:
    """Write a one-step model as a diffusers folder (UNet + the teacher's scheduler + meta with "one_step").

    `extra_modules` are saved as further subfolders (e.g. the SFD fake score for a later stage 2);
    `half` stores the weights as float16 (they load back as float32) to keep bundled demos small.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".onestep-", dir=out_dir.parent))
    try:
        def _prep(m):
            import copy

            m = copy.deepcopy(m).cpu()
            return m.half() if half else m

        if bundle.pipe is not None:  # SD: the teacher's VAE, text encoder, tokenizer + generator + Euler
            one_step_pipeline(bundle, _prep(unet)).save_pretrained(tmp, safe_serialization=True)
        else:
            from diffusers import DDPMPipeline

            DDPMPipeline(unet=_prep(unet), scheduler=bundle.scheduler).save_pretrained(tmp, safe_serialization=True)
        for name, module in (extra_modules or {}).items():
            _prep(module).save_pretrained(tmp / name, safe_serialization=True)
        meta = {k: v for k, v in (bundle.meta or {}).items() if k not in ("build", ONE_STEP)}
        meta.update(extra_meta or {})
        meta[ONE_STEP] = {"t_init": int(t_init), "sigma_init": float(sigma_init)}
        if guidance != 1.0:
            meta[ONE_STEP]["guidance"] = float(guidance)
        meta["default_steps"] = 1
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
