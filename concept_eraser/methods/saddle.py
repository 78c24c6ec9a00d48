"""Saddle with L_help: Schioppa, Hoogeboom, Heek, "Model Integrity when Unlearning with T2I Diffusion Models"
(arXiv 2411.02068).

The paper names a min–max ("saddle-point") unlearning algorithm, Saddle, with help terms L_help. Its
equations were not readable here, so this is OUR RECONSTRUCTION, a Lagrangian with dual ascent:

    L_f(θ) = E ‖ε − ε_θ(x^f_t, c_f, t)‖²      forget denoising loss (on the original model's images of c_f,
                                                or the user's forget images)
    L_r(θ) = E ‖ε − ε_θ(x^r_t, c_r, t)‖²      retain denoising loss (on the original model's retain images)
    min_θ max_{μ≥0}  −min(L_f, κ·L_f*) + μ·(L_r − (1 + τ)·L_r*) + λ·L_help

- L_f*, L_r*: the frozen original's losses on the very same x_t, t and ε (paired, so the constraint
  "retain loss at or below its original value" is measured without sampling noise).
- Bounded ascent: the forget loss only rises until κ (`forget_cap`) times the original's, after which its
  gradient is zero; gradients are clipped as well.
- Dual ascent on μ after every step: μ ← clip(μ + η·(L_r/L_r* − 1 − τ), 0, μ_max). μ rises while the retain
  loss is above its bound and decays towards 0 when it is below. μ is saved beside the checkpoint
  (`saddle_state.json`) so that a resumed run continues with the same multiplier.
- L_help as in OVW (distillation to the original on retain samples and on forget samples under unrelated
  conditioning, ∅ included); it is our reading of "help".
- Trained parameters and the defaults for retain items: see `methods/_shared.py` (Saddle needs no anchor).
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
    forget_cap: float = Field(4.0, gt=1.0, le=1000.0, description="κ: the forget loss rises until κ times the "
                              "original model's, then stops (bounded ascent).")
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
    estimate = "about 3 min for the digits demo on a 2-core CPU"

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
            l_f = F.mse_loss(out[:nf].float(), tf.float())
            l_f0 = F.mse_loss(ref[:nf].float(), tf.float())
            l_r = F.mse_loss(out[nf : nf + nr].float(), tr.float())
            l_r0 = F.mse_loss(ref[nf : nf + nr].float(), tr.float()).clamp_min(1e-12)
            mu = state["mu"]
            ascent = -torch.minimum(l_f, config.forget_cap * l_f0)
            loss = ascent + mu * (l_r - (1 + config.retain_tolerance) * l_r0) / l_r0
            sc = {"loss_forget_ratio": float(l_f.detach() / l_f0), "loss_retain_ratio": float(l_r.detach() / l_r0),
                  "multiplier": mu}
            if lam > 0:
                l_h = F.mse_loss(out[nf + nr:].float(), ref[nf + nr:].float())
                loss = loss + lam * l_h
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
