"""OVW ("overwrite") with L_help: Schioppa, Hoogeboom, Heek, "Model Integrity when Unlearning with T2I
Diffusion Models" (arXiv 2411.02068).

The paper names the algorithm OVW and its auxiliary help terms L_help, and shows that dropping L_help
disturbs retained concepts. Its equations were not readable here, so this is OUR RECONSTRUCTION:

    L = E ‖ε_θ(x_t, c_f, t) − sg(ε*(x_t, c_a, t))‖²                       (overwrite)
      + λ · E ‖ε_θ(x_t, c_r, t) − sg(ε*(x_t, c_r, t))‖²                    (L_help)

- x_t in the overwrite term: the user's forget images when given, otherwise images of c_f that the
  original model generates once at the start (DDIM, its default guidance; cached for the run), noised at
  a uniform timestep. ε* is the frozen original (its trained tensors swapped back in, no second model).
- c_a, the anchor: the user's, or the closest other class / sibling word by the original model's own
  predictions on those samples, or (sd without a vocabulary) the prompt with the concept removed. See
  `methods/_shared.py` for every default.
- L_help (what "help" means is our reading): distillation to the original on (a) the original model's
  samples of the retain classes/prompts under their own conditioning, and (b) forget samples (and half of
  the retain samples) under unrelated conditioning: a random retain item or ∅. ∅ is included because
  classifier-free guidance uses it for every prompt.
- Trained parameters: ddpm-cond and sd default to 'cross-attn' (sd: attn2; ddpm-cond: the class embedding
  and each block's time/class projection). What the paper trains was not readable here.
"""

from __future__ import annotations

from collections.abc import Generator

import torch
import torch.nn.functional as F

from concept_eraser.engine import denoise
from concept_eraser.engine.params import count, select_params
from concept_eraser.engine.training import Originals, TrainSettings
from concept_eraser.engine.unlearn import UnlearnRun
from concept_eraser.spec.events import Event, Log
from concept_eraser.spec.registry import MethodInfo, Needs

from . import _shared

PAPER = "Schioppa, Hoogeboom, Heek. Model Integrity when Unlearning with T2I Diffusion Models. arXiv 2411.02068"


class OVWConfig(_shared.IntegrityConfig):
    """OVW settings (all shared with Saddle; OVW has no settings of its own)."""


class OVW(_shared.IntegrityMethod):
    info = MethodInfo(
        key="ovw",
        title="OVW (overwrite, integrity-preserving)",
        paper=PAPER,
        summary="Makes the concept behave like an anchor (the original model's prediction for a replacement "
                "class or word) on the original model's own images of it, while a help term distils the "
                "original on retain prompts so that everything else stays the same. Our reconstruction.",
        model_kinds=frozenset({"sd", "ddpm-cond"}),
        needs=Needs(concept=True),
        edits=("unet",),
    )
    Config = OVWConfig
    estimate = "about 2 min for the digits demo, 1 min for shapes, on a 2-core CPU"

    def run(self, run: UnlearnRun, config: OVWConfig) -> Generator[Event, None, dict[str, float]]:
        bundle = run.bundle
        plan, pools, cache = _shared.prepare(run, config, want_anchor=True)
        yield Log("info", f"ovw: {len(plan.forget)} forget item(s) -> anchor ({plan.anchor_source}): "
                          f"{plan.forget[0]!r} -> {plan.anchors[0]!r}; {len(plan.retain)} retain item(s)")
        params = select_params(bundle, _shared.resolve_group(config, bundle))
        originals = Originals(params)
        lam = config.help_weight

        def loss_fn(step: int, g: torch.Generator):
            fi, fx, ft, _ = _shared.noised(bundle, pools.forget_x0, config.batch, g)
            which = [pools.forget_of[i] for i in fi.tolist()]
            f_items = [plan.forget[k] for k in which]
            a_items = [plan.anchors[k] for k in which]
            hx, ht, h_items = _shared.help_batch(bundle, plan, pools, config, g) if lam > 0 else (None, None, [])
            # teacher first, then the student (the autograd graph never sees swapped weights)
            with originals.active():
                tgt_f = denoise.predict(bundle, fx, ft, cache(a_items))
                tgt_h = denoise.predict(bundle, hx, ht, cache(h_items)) if lam > 0 else None
            if lam > 0:
                out = denoise.predict(bundle, torch.cat([fx, hx]), torch.cat([ft, ht]), cache(f_items + h_items))
                out_f, out_h = out[: len(fx)], out[len(fx):]
            else:
                out_f = denoise.predict(bundle, fx, ft, cache(f_items))
            l_f = F.mse_loss(out_f.float(), tgt_f.float())
            loss = l_f
            sc = {"loss_overwrite": float(l_f.detach())}
            if lam > 0:
                l_h = F.mse_loss(out_h.float(), tgt_h.float())
                loss = loss + lam * l_h
                sc["loss_help"] = float(l_h.detach())
            sc["loss"] = float(loss.detach())
            return loss, sc

        settings = TrainSettings(steps=config.steps, lr=_shared.resolve_lr(config, bundle), optimizer="adam",
                                 grad_clip=config.grad_clip, checkpoint_every=config.checkpoint_every,
                                 seed=run.spec.seed)
        with _shared.only_forget_rows(params, plan):
            stats = yield from run.train(params, loss_fn, settings, extra={"anchor": repr(plan.anchors[0])})
        stats = {**stats, "trained_parameters": float(count(params))}
        run.stats.update(stats)
        return stats
