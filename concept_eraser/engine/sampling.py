"""Same-seed grids: rows (prompts, class labels or unconditional) x seeds.

Every cell gets a fresh CPU torch.Generator seeded with its column's seed, used for its initial
noise and for any noise a stochastic scheduler draws, so a cell's pixels depend only on (model,
row, seed, sampling spec), and before/after grids made with the same spec are comparable cell by
cell. Cancel is checked once per denoising step.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from concept_eraser.spec.events import Event, Grid, Progress, StageStarted
from concept_eraser.spec.jobspec import SampleRow, SamplingSpec
from concept_eraser.spec.runloop import JobCancelled, JobContext, UserError

from .bundle import ModelBundle

# Latent elements per forward pass at most: grids on large models run in fewer cells at a time so one pass fits a
# consumer GPU (SD 1.x at 512 px: 16 cells, SDXL at 1024 px: 4); the demo models keep the spec's batch. Every cell
# has its own generator, so the split does not change pixels.
MAX_PASS_ELEMENTS = 2**18


def make_scheduler(name: str, base_config):
    """A fresh scheduler of the chosen family, configured from the model's own scheduler config."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
    )

    if name == "ddim":
        return DDIMScheduler.from_config(base_config)
    if name == "ddpm":
        return DDPMScheduler.from_config(base_config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(base_config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++", solver_order=2)
    raise UserError(f"unknown scheduler {name!r}; choose ddim, ddpm, euler or dpm++")


def check_rows(bundle: ModelBundle, rows: list[SampleRow]) -> None:
    s = bundle.summary
    for row in rows:
        if row.kind == "label":
            if s.conditioning != "class":
                raise UserError(f"{s.kind} models take no class labels; give prompts or 'unconditional' rows")
            if row.label >= (s.num_classes or 0):
                raise UserError(f"class {row.label} does not exist; this model has classes 0-{s.num_classes - 1}")
        if row.kind == "prompt" and s.conditioning != "text":
            raise UserError(f"{s.kind} models take no text prompts; give class labels or 'unconditional' rows")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, 3) uint8; one channel is repeated to grey RGB."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def cells_per_pass(bundle: ModelBundle, spec: SamplingSpec) -> int:
    """spec.batch_size, capped so one forward pass holds at most MAX_PASS_ELEMENTS latent elements."""
    from .denoise import x_shape

    c, size, _ = x_shape(bundle)
    res = bundle.summary.resolution
    h, w = spec.height or res, spec.width or res
    elements = c * max(1, size * h // res) * max(1, size * w // res)
    return max(1, min(spec.batch_size, MAX_PASS_ELEMENTS // elements))


def sample_grid(bundle: ModelBundle, spec: SamplingSpec, ctx: JobContext) -> Generator[Event, None, Grid]:
    if bundle.meta and bundle.meta.get("one_step"):  # a distilled one-step generator (SFD): one forward
        from .one_step import sample_one_step

        return (yield from sample_one_step(bundle, spec, ctx))
    check_rows(bundle, spec.rows)
    s = bundle.summary
    cells = [(r, c) for r in range(len(spec.rows)) for c in range(len(spec.seeds))]
    n = cells_per_pass(bundle, spec)
    batches = [cells[i : i + n] for i in range(0, len(cells), n)]
    height = spec.height or s.resolution
    width = spec.width or s.resolution
    guidance = s.default_guidance if spec.guidance is None else spec.guidance
    out: dict[tuple[int, int], np.ndarray] = {}
    total = len(batches) * spec.steps
    yield StageStarted("sample", total=total)
    for b, batch in enumerate(batches):
        rows = [spec.rows[r] for r, _ in batch]
        gens = [torch.Generator("cpu").manual_seed(spec.seeds[c]) for _, c in batch]
        if s.conditioning == "text":
            images = _sample_sd(bundle, spec, rows, gens, height, width, guidance, ctx)
            yield Progress("sample", (b + 1) * spec.steps, total)
        else:
            images = yield from _sample_ddpm(bundle, spec, rows, gens, height, width, guidance, ctx, b * spec.steps, total)
        for cell, img in zip(batch, images, strict=True):
            out[cell] = img
    grid = np.stack([np.stack([out[(r, c)] for c in range(len(spec.seeds))]) for r in range(len(spec.rows))])
    labels = tuple(row.describe(s.class_names) for row in spec.rows)
    return Grid(grid, labels, tuple(spec.seeds))


def _noise(gens, shape, device, dtype) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in gens]).to(device, dtype)


@torch.no_grad()
def _sample_ddpm(bundle, spec, rows, gens, height, width, guidance, ctx, done, total):
    s = bundle.summary
    unet = bundle.unet
    sched = make_scheduler(spec.scheduler, bundle.scheduler.config)
    sched.set_timesteps(spec.steps, device=bundle.device)
    x = _noise(gens, (unet.config.in_channels, height, width), bundle.device, bundle.dtype) * sched.init_noise_sigma
    labels = None
    use_cfg = False
    if s.conditioning == "class":
        labels = torch.tensor([s.null_class if r.label is None else r.label for r in rows], device=bundle.device)
        use_cfg = guidance != 1.0 and any(r.label is not None for r in rows)
        null = torch.full_like(labels, s.null_class)
        # unconditional rows use the null class with no guidance: scale their guidance to 1
        g_row = torch.tensor([guidance if r.label is not None else 1.0 for r in rows], device=bundle.device,
                             dtype=bundle.dtype).view(-1, 1, 1, 1)
    for i, t in enumerate(sched.timesteps):
        ctx.check_cancelled()
        xin = sched.scale_model_input(x, t)
        if labels is None:
            eps = unet(xin, t).sample
        elif use_cfg:
            both = unet(torch.cat([xin, xin]), t, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            eps = uncond + g_row * (cond - uncond)
        else:
            eps = unet(xin, t, class_labels=labels).sample
        x = sched.step(eps, t, x, generator=gens).prev_sample
        yield Progress("sample", done + i + 1, total)
    return list(to_uint8(x))


def _sample_sd(bundle, spec, rows, gens, height, width, guidance, ctx):
    pipe = bundle.pipe
    # A shallow copy with its own scheduler: the loaded pipeline's scheduler is never changed.
    components = dict(pipe.components)
    components["scheduler"] = make_scheduler(spec.scheduler, bundle.scheduler.config)
    runner = type(pipe)(**components)
    runner.set_progress_bar_config(disable=True)
    factor = 2 ** (len(bundle.vae.config.block_out_channels) - 1)
    shape = (bundle.unet.config.in_channels, height // factor, width // factor)
    latents = _noise(gens, shape, bundle.device, bundle.dtype)

    def on_step(_pipe, _i, _t, kwargs):
        if ctx.cancel.cancelled:
            raise JobCancelled()
        return kwargs

    prompts = [r.prompt if r.prompt is not None else "" for r in rows]
    negative = [spec.negative_prompt] * len(rows) if spec.negative_prompt else None
    result = runner(
        prompt=prompts,
        negative_prompt=negative,
        num_inference_steps=spec.steps,
        guidance_scale=guidance,
        height=height,
        width=width,
        latents=latents,
        generator=gens,
        output_type="pt",
        callback_on_step_end=on_step,
    )
    return list(to_uint8(result.images * 2 - 1))
