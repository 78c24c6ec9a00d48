"""ESD: Erasing Concepts from Diffusion Models (Gandikota, Materzyńska, Fiotto-Kaufman, Bau; ICCV 2023).

The edited model is fine-tuned so that conditioning on the concept c_f produces the *negatively
guided* prediction of the frozen original ε* (the paper's Eq. 5):

    L = ‖ ε_θ(x_k, c_f, t_k) − [ ε*(x_k, ∅, t_k) − η (ε*(x_k, c_f, t_k) − ε*(x_k, ∅, t_k)) ] ‖²

where x_k is a partial DDIM roll-out (k of `rollout_steps` steps, classifier-free guidance
`guidance`) from c_f. As in the authors' newer diffusers code, the roll-out and the targets use the
frozen original (the trained tensors are swapped back to their original values for those no-grad
forwards, `engine.training.Originals`); the teacher runs before the student forward of each step.

Three registered variants differ only in the parameter group they train (`engine.params`):
  esd-x     cross-attention (styles, prompt-specific concepts)       group "cross-attn"
  esd-u     everything except cross-attention (global concepts)       group "non-cross-attn"
  esd-full  the whole UNet                                            group "full"

Reconstruction, not the paper: class-conditional DDPMs ("ddpm-cond") have no cross-attention; ∅ is
the null class and a concept is a class label. For esd-x the analogue we train by default is the class
embedding (group "kv": the concept's only way into the network, as the text keys/values are in SD);
only the forgotten class's row receives gradients, so every other class stays bit-identical. The
wider class path (embedding + each resnet's time/class projection, group "cross-attn") can be chosen
with `params`; it also moves the other classes.

Our addition (not in the paper): an optional retain-preservation term
γ·‖ε_θ(x^r_k, c_r, t) − ε*(x^r_k, c_r, t)‖² on roll-outs of the retain rows (for class models,
by default every other class and the null class). Its default weight is 0 for esd-x (not needed:
the measured collateral damage stays within the target) and 1 for esd-u/esd-full on class models, where
editing the shared trunk otherwise moves the other classes (see README's unlearning table).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from concept_eraser.spec.events import Event, Log
from concept_eraser.spec.registry import MethodConfig, MethodInfo, Needs

from .base import Method

if TYPE_CHECKING:
    from concept_eraser.engine.unlearn import UnlearnRun

PAPER = 'Gandikota et al., "Erasing Concepts from Diffusion Models", ICCV 2023'
Group = Literal["cross-attn", "kv", "non-cross-attn", "full"]


class EsdConfig(MethodConfig):
    steps: int = Field(100, ge=1, le=100_000, description="Optimizer steps (the paper: 1000; new code: 200).")
    lr: float | None = Field(
        None, gt=0, le=1.0,
        description="Learning rate. None = automatic: 1e-5 (the paper's) for models over 100 M parameters, "
                    "3e-4 for the small demo models.")
    eta: float = Field(1.0, ge=0.0, le=10.0, description="Negative guidance strength η of the target.")
    guidance: float = Field(3.0, ge=1.0, le=20.0, description="Classifier-free guidance of the roll-out.")
    rollout_steps: int | None = Field(
        None, ge=2, le=1000, description="DDIM steps of the roll-out schedule; k is drawn uniformly from "
        "0..rollout_steps-1. None = automatic: 50 (the paper's) for models over 100 M parameters, 20 for the small "
        "demo models (the roll-out is most of a step's cost on a CPU).", json_schema_extra={"advanced": True})
    batch: int = Field(8, ge=1, le=256, description="Roll-outs per optimizer step.")
    grad_accum: int = Field(1, ge=1, le=64, description="Micro-batches per optimizer step.",
                            json_schema_extra={"advanced": True})
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; None = no clipping.",
                                    json_schema_extra={"advanced": True})
    checkpoint_every: int = Field(0, ge=0, description="Write checkpoint.pt every N steps (0 = at the end and "
                                  "when cancelled).", json_schema_extra={"advanced": True})
    params: Group | None = Field(None, description="Parameter group to train; None = the variant's own "
                                 "(esd-x: cross-attn, on class models kv = the class embedding; esd-u: "
                                 "non-cross-attn; esd-full: full).")
    retain_weight: float | None = Field(
        None, ge=0.0, le=100.0,
        description="Weight of the retain-preservation term (our addition). None = the variant's default: "
                    "0 for esd-x, 1 for esd-u/esd-full on class-conditional models, 0 otherwise.")

    @classmethod
    def smoke(cls) -> EsdConfig:
        return cls(steps=2, batch=2, rollout_steps=4, lr=1e-3)


class _Esd(Method):
    Config: ClassVar[type[MethodConfig]] = EsdConfig
    group: ClassVar[str] = "cross-attn"
    estimate = "about 1-2 min on a 2-core CPU for the digits demo"

    def default_retain_weight(self, kind: str) -> float:
        return 0.0

    def default_group(self, kind: str) -> str:
        return self.group

    def run(self, run: UnlearnRun, config: EsdConfig) -> Generator[Event, None, dict[str, float]]:
        from concept_eraser.engine import denoise
        from concept_eraser.engine.params import count, select_params
        from concept_eraser.engine.training import Originals, TrainSettings

        bundle = run.bundle
        kind = bundle.summary.kind
        group = config.params or self.default_group(kind)
        params = select_params(bundle, group)
        n_params = count(params)
        big = bundle.summary.parameters > 100e6
        lr = config.lr if config.lr is not None else (1e-5 if big else 1e-2 if group == "kv" and kind == "ddpm-cond"
                                                      else 3e-4)
        n_roll = config.rollout_steps or (50 if big else 20)
        gamma = config.retain_weight if config.retain_weight is not None else self.default_retain_weight(kind)
        forget = run.inputs.forget_items
        retain = list(run.inputs.retain_items)
        if gamma > 0 and bundle.summary.conditioning != "none" and None not in retain:
            retain.append(None)  # ∅ drives classifier-free guidance: keep it too
        if gamma > 0 and not retain:
            gamma = 0.0
            yield Log("warning", "retain_weight > 0 but no retain rows: the retain term is off")
        yield Log("info", f"{self.info.key}: training {len(params)} tensors ({n_params:,} values), lr {lr:g}, "
                          f"eta {config.eta}, retain weight {gamma:g}")
        with torch.no_grad():
            cond_f = denoise.encode(bundle, forget).detach()
            cond_r = denoise.encode(bundle, retain).detach() if gamma > 0 else None
            null = denoise.encode(bundle, [None]).detach()
        originals = Originals(params)
        B = config.batch

        def pick(cond: denoise.Cond, n: int, g: torch.Generator) -> denoise.Cond:
            idx = torch.randint(0, len(cond), (n,), generator=g).to(bundle.device)
            return cond._map(lambda v: v.index_select(0, idx))

        def loss_fn(step: int, g: torch.Generator):
            k = int(torch.randint(0, n_roll, (1,), generator=g))
            cf = pick(cond_f, B, g)
            cr = pick(cond_r, B, g) if cond_r is not None else None
            rows = denoise.Cond.cat([cf, cr]) if cr is not None else cf
            n = len(rows)
            with originals.active():  # teacher: before the student forward
                x, t = denoise.rollout(bundle, rows, config.guidance, k, n_roll, g, batch=n,
                                       uncond=null.expand(n))
                e_f = denoise.predict(bundle, torch.cat([x[:B], x[:B]]), torch.cat([t[:B], t[:B]]),
                                      denoise.Cond.cat([cf, null.expand(B)]))
                e_c, e_0 = e_f.chunk(2)
                tgt = e_0 - config.eta * (e_c - e_0)
                e_r = denoise.predict(bundle, x[B:], t[B:], cr) if cr is not None else None
            out = denoise.predict(bundle, x, t, rows)
            erase = torch.nn.functional.mse_loss(out[:B].float(), tgt.float())
            scalars = {"erase": erase.item()}
            loss = erase
            if e_r is not None:
                keep = torch.nn.functional.mse_loss(out[B:].float(), e_r.float())
                scalars["retain"] = keep.item()
                loss = loss + gamma * keep
            scalars["loss"] = loss.item()
            return loss, scalars

        settings = TrainSettings(steps=config.steps, lr=lr, optimizer="adam", grad_clip=config.grad_clip,
                                 grad_accum=config.grad_accum, checkpoint_every=config.checkpoint_every,
                                 seed=run.spec.seed, mixed_precision=_mixed_precision(bundle))
        stats = yield from run.train(params, loss_fn, settings, extra={"group": group})
        return {**stats, "trained_values": float(n_params), "lr": lr, "retain_weight": gamma}


def _mixed_precision(bundle) -> str:
    if bundle.device.type != "cuda" or bundle.dtype == torch.float32:
        return "no"
    return "bf16" if bundle.dtype == torch.bfloat16 else "fp16"


_KINDS = frozenset({"sd", "ddpm-cond"})  # sdxl: untested here (no SDXL fixture), so not offered
_NEEDS = Needs(concept=True)


class EsdX(_Esd):
    group = "cross-attn"

    def default_group(self, kind: str) -> str:
        # Class models: the class embedding is what text keys/values are to SD (the only path the concept
        # enters by); training just its row for the forgotten class leaves every other class bit-identical.
        return "kv" if kind == "ddpm-cond" else "cross-attn"
    info = MethodInfo(
        key="esd-x", title="ESD-x (cross-attention)", paper=PAPER,
        summary="Fine-tunes cross-attention so the concept's prompt is steered away from it (styles, "
                "prompt-specific concepts). Class models: the class-conditioning path.",
        model_kinds=_KINDS, needs=_NEEDS, edits=("unet",))


class EsdU(_Esd):
    group = "non-cross-attn"
    info = MethodInfo(
        key="esd-u", title="ESD-u (all but cross-attention)", paper=PAPER,
        summary="Fine-tunes everything except cross-attention (global concepts such as objects or nudity).",
        model_kinds=_KINDS, needs=_NEEDS, edits=("unet",))

    def default_retain_weight(self, kind: str) -> float:
        return 1.0 if kind == "ddpm-cond" else 0.0


class EsdFull(_Esd):
    group = "full"
    info = MethodInfo(
        key="esd-full", title="ESD (whole UNet)", paper=PAPER,
        summary="Fine-tunes the whole UNet with the ESD objective (strongest, most collateral damage).",
        model_kinds=_KINDS, needs=_NEEDS, edits=("unet",))

    def default_retain_weight(self, kind: str) -> float:
        return 1.0 if kind == "ddpm-cond" else 0.0
