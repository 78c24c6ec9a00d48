"""Saddle with L_help: Schioppa, Hoogeboom, Heek, "Model Integrity when Unlearning with T2I Diffusion Models"
(arXiv 2411.02068).

The paper names a min–max ("saddle-point") unlearning algorithm, Saddle, with help terms L_help. Its
equations were not readable here, so this is OUR RECONSTRUCTION, a Lagrangian with dual ascent:

    ℓ_f(θ; i) = ‖ε_i − ε_θ(x^f_{t,i}, c_f, t_i)‖²   forget denoising loss of sample i (on the original model's
                                                  images of c_f, or the user's forget images)
    L_r(θ)    = E ‖ε − ε_θ(x^r_t, c_r, t)‖²          retain denoising loss (on the original model's retain images)
    min_θ max_{μ≥0}  −E_i min(ℓ_f(θ; i) / ℓ_f*(i), κ) + μ·(L_r / L_r* − 1 − τ) + λ·L_help / L_r*

- ℓ_f*, L_r*: the frozen original's losses on the very same x_t, t and ε (paired, so the constraint
  "retain loss at or below its original value" is measured without sampling noise).
- Bounded ascent, per sample and relative: each forget sample's loss only rises until κ (`forget_cap`) times
  the original's on that sample, after which its gradient is zero; gradients are clipped as well. Why per
  sample: with one bound on the batch mean, the ascent spent itself on the low-t samples (whose ε-loss is
  largest and cheapest to raise: fine detail) and left the digit's shape intact (30% of class-3 samples were
  still judged 3 at κ = 4 on the batch mean; 0% of 30 with the per-sample bound at κ = 16).
- All three terms are in units of the original's loss (ratios), so κ, τ and λ do not depend on the model's
  loss scale; λ multiplies L_help / sg(L_r*).
- Dual ascent on μ after every step: μ ← clip(μ + η·(L_r/L_r* − 1 − τ), 0, μ_max). μ rises while the retain
  loss is above its bound and decays towards 0 when it is below. μ is saved beside the checkpoint
  (`saddle_state.json`) so that a resumed run continues with the same multiplier.
- L_help as in OVW (distillation to the original on retain samples and on forget samples under unrelated
  conditioning, ∅ included); it is our reading of "help". The retain-loss constraint alone does not keep
  retained classes: a model can change its retained samples without raising their denoising loss, so
  L_help carries a large weight (λ = 10).
- Trained parameters and the defaults for retain items: see `methods/_shared.py` (Saddle needs no anchor).

Measured (bench/unlearn_quality.py --samples 100, defaults κ = 16, λ = 10, 100 steps, one thread):
- digits, forget 3: 0% of class-3 samples judged 3 (was 30% with the batch-mean bound, κ = 4, λ = 1); worst
  retained class 5, 100 → 98% (2 points, at the edge of the ±2 target); SSIM distance on retained rows 0.036
  (OVW: 0.009). Training ≈ 50 CPU-seconds (pools + 100 steps); whole job 222 CPU-s with the judged samples.
- shapes, forget "striped": UA 2.8 → 43.8% (OVW: 96.2%), IRA 97.9 → 98.2%, CRA 99.4 → 97.8%; training
  80 s wall on a loaded machine, whole job 118 CPU-s. Raising the denoising loss of the striped prompts does
  not remove their texture under guidance 3 (200 steps: 40.8%; λ = 1: 32.5% and IRA 87.5%, 30 samples);
  use OVW to erase an sd attribute.
"""

from __future__ import annotations

import json
from collections.abc import Generator

import torch
import torch.nn.functional as F
from pydantic import Field

from concept_eraser.engine import denoise
from concept_eraser.engine.params import count, select_params
from concept_eraser.engine.training import Originals, TrainSettings, load_checkpoint
from concept_eraser.engine.unlearn import UnlearnRun
from concept_eraser.spec.events import Event, Log
from concept_eraser.spec.files import atomic_write_text
from concept_eraser.spec.registry import MethodInfo, Needs
from concept_eraser.spec.runloop import UserError

from . import _shared
from .ovw import PAPER

STATE = "saddle_state.json"


class SaddleConfig(_shared.IntegrityConfig):
    forget_cap: float = Field(16.0, gt=1.0, le=1000.0, description="κ: each forget sample's loss rises until κ "
                              "times the original model's on the same noised image, then stops (bounded ascent).")
    # the help term is measured relative to the original's retain loss, like the other two terms; 10 keeps every
    # retained digit within 1 sample in 30 at κ = 16 (1 hurt class 7 by 4 in 30)
    help_weight: float = Field(10.0, ge=0.0, le=1000.0, description="λ of L_help (relative to the original's "
                               "retain loss): distillation to the original model on retain prompts/classes and on "
                               "forget images under unrelated conditioning.")
    retain_tolerance: float = Field(0.02, ge=0.0, le=10.0, description="τ: the retain loss may exceed the "
                                    "original's by this fraction before the multiplier rises.")
    multiplier_lr: float = Field(5.0, gt=0.0, le=1e4, description="η: dual-ascent step of the multiplier μ.",
                                 json_schema_extra=_shared.ADV)
    multiplier_init: float = Field(1.0, ge=0.0, le=1e4, description="μ at the start.", json_schema_extra=_shared.ADV)
    multiplier_max: float = Field(1000.0, gt=0.0, le=1e6, description="Upper bound of μ.",
                                  json_schema_extra=_shared.ADV)


class Saddle(_shared.IntegrityMethod):
    info = MethodInfo(
        key="saddle",
        title="Saddle (bounded ascent under a retain constraint)",
        paper=PAPER,
        summary="Raises the denoising error on the concept (bounded) while a Lagrange multiplier holds the "
                "retain denoising error at its original value, with a help term that distils the original "
                "on retain prompts. Our reconstruction.",
        model_kinds=frozenset({"sd", "ddpm-cond"}),
        needs=Needs(concept=True),
        edits=("unet",),
    )
    Config = SaddleConfig
    estimate = "about 1 min for the digits demo, 1 min for shapes, on a 2-core CPU"

    def run(self, run: UnlearnRun, config: SaddleConfig) -> Generator[Event, None, dict[str, float]]:
        bundle = run.bundle
        plan, pools, cache = _shared.prepare(run, config, want_anchor=False)
        yield Log("info", f"saddle: {len(plan.forget)} forget item(s), {len(plan.retain)} retain item(s)")
        params = select_params(bundle, _shared.resolve_group(config, bundle))
        originals = Originals(params)
        lam = config.help_weight
        state = {"mu": config.multiplier_init, "history": {}}
        if run.resume:
            state = _load_state(run)

        def loss_fn(step: int, g: torch.Generator):
            state["history"][str(step)] = state["mu"]
            fi, fx, ft, fn = _shared.noised(bundle, pools.forget_x0, config.batch, g)
            f_items = [plan.forget[pools.forget_of[i]] for i in fi.tolist()]
            ri, rx, rt, rn = _shared.noised(bundle, pools.retain_x0, config.retain_batch, g)
            r_items = [plan.retain[pools.retain_of[i]] for i in ri.tolist()]
            hx, ht, h_items = _shared.help_batch(bundle, plan, pools, config, g) if lam > 0 else (None, None, [])
            xs, ts, items = [fx, rx], [ft, rt], f_items + r_items
            if lam > 0:
                xs, ts, items = xs + [hx], ts + [ht], items + h_items
            x, t, cond = torch.cat(xs), torch.cat(ts), cache(items)
            nf, nr = len(fx), len(rx)
            with originals.active():  # teacher first
                ref = denoise.predict(bundle, x, t, cond)
            out = denoise.predict(bundle, x, t, cond)
            tf = denoise.target(bundle, pools.forget_x0[fi], fn, ft)
            tr = denoise.target(bundle, pools.retain_x0[ri], rn, rt)
            # per-sample forget losses, each relative to the original's on the same x_t, t, ε
            dims = tuple(range(1, out.dim()))
            e_f = (out[:nf].float() - tf.float()).pow(2).mean(dims)
            e_f0 = (ref[:nf].float() - tf.float()).pow(2).mean(dims).clamp_min(1e-12)
            r_f = e_f / e_f0
            l_r = F.mse_loss(out[nf : nf + nr].float(), tr.float())
            l_r0 = F.mse_loss(ref[nf : nf + nr].float(), tr.float()).clamp_min(1e-12)
            mu = state["mu"]
            ascent = -torch.minimum(r_f, torch.full_like(r_f, config.forget_cap)).mean()
            loss = ascent + mu * (l_r / l_r0 - 1 - config.retain_tolerance)
            sc = {"loss_forget_ratio": float(e_f.detach().mean() / e_f0.mean()),
                  "loss_retain_ratio": float(l_r.detach() / l_r0), "multiplier": mu}
            if lam > 0:
                l_h = F.mse_loss(out[nf + nr:].float(), ref[nf + nr:].float())
                loss = loss + lam * l_h / l_r0.detach()
                sc["loss_help"] = float(l_h.detach())
            # dual ascent on the constraint violation measured at this step
            violation = float(l_r.detach() / l_r0) - 1 - config.retain_tolerance
            state["mu"] = min(max(mu + config.multiplier_lr * violation, 0.0), config.multiplier_max)
            state["history"][str(step + 1)] = state["mu"]
            atomic_write_text(run.run_dir / STATE, json.dumps(state))
            sc["loss"] = float(loss.detach())
            return loss, sc

        settings = TrainSettings(steps=config.steps, lr=_shared.resolve_lr(config, bundle), optimizer="adam",
                                 grad_clip=config.grad_clip, checkpoint_every=config.checkpoint_every,
                                 seed=run.spec.seed)
        with _shared.only_forget_rows(params, plan):
            stats = yield from run.train(params, loss_fn, settings)
        stats = {**stats, "trained_parameters": float(count(params)), "multiplier": state["mu"]}
        run.stats.update(stats)
        return stats


def _load_state(run: UnlearnRun) -> dict:
    ck = load_checkpoint(run.run_dir)
    path = run.run_dir / STATE
    if ck is None or not path.is_file():
        raise UserError(f"nothing to resume in {run.run_dir}: it lacks the checkpoint or {STATE}")
    state = json.loads(path.read_text(encoding="utf-8"))
    step = str(int(ck["step"]))
    if step not in state["history"]:
        raise UserError(f"{path} has no multiplier for step {step}; start afresh")
    return {"mu": state["history"][step], "history": {k: v for k, v in state["history"].items() if int(k) <= int(step)}}
