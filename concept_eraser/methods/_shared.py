"""Helpers that OVW and Saddle (Schioppa et al.) both use: their shared settings, the forget/anchor/retain
plan with its defaults, the teacher's sample pools, cached conditioning, and the L_help distillation term.

Defaults (the same for both methods; the methods' docstrings repeat them):
- forget items: ddpm-cond, the concept labels. sd, when the model ships a vocabulary (the shapes demo:
  attribute words and "a {colour} {texture} {shape}" prompts), every vocabulary prompt that contains the
  concept word; otherwise the concept text in a few wordings (`forget_templates`).
- anchor (OVW's replacement): the user's anchor when given. Otherwise the *closest* candidate by the
  original model's own predictions on the forget samples (mean ‖ε*(x_t, c) − ε*(x_t, c_f)‖² over the same
  x_t, t): ddpm-cond, every other class; sd with a vocabulary, the concept's sibling words of the same
  attribute (each forget prompt with the word replaced). Without candidates (sd, no vocabulary) the anchor
  is the forget prompt with the concept text removed (∅ for the bare concept). The closest replacement
  is the smallest edit that still removes the concept. ∅ is not the ddpm-cond default: conditioning on
  ∅ gives the unconditional model, which draws the forgotten class at its base rate (~12% for digit 3).
- retain items: the user's retain rows when given; otherwise ddpm-cond, every other class; sd, the
  vocabulary prompts without the concept word; sd without vocabulary and without retain prompts is
  refused (we cannot guess what must stay).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field

from concept_eraser.engine import denoise
from concept_eraser.engine.bundle import ModelBundle
from concept_eraser.engine.denoise import Cond, CondItem
from concept_eraser.engine.unlearn import UnlearnRun
from concept_eraser.methods.base import Method
from concept_eraser.spec.jobspec import JobSpec
from concept_eraser.spec.registry import MethodConfig
from concept_eraser.spec.runloop import UserError
from concept_eraser.spec.summary import ModelSummary

ADV = {"advanced": True}
GROUPS = ("auto", "cross-attn", "kv", "non-cross-attn", "full")


class IntegrityConfig(MethodConfig):
    """Settings OVW and Saddle share."""

    steps: int = Field(100, ge=1, le=100_000, description="Optimizer steps.")
    lr: float = Field(0.0, ge=0.0, le=1.0, description="Learning rate; 0 = per model kind (ddpm-cond 3e-3, sd 1e-3).")
    param_group: Literal["auto", "cross-attn", "kv", "non-cross-attn", "full"] = Field(
        "auto", description="What is trained. auto: ddpm-cond 'cross-attn' (class embedding + the class/time "
        "projections), sd 'cross-attn' (every attn2).")
    help_weight: float = Field(1.0, ge=0.0, le=1000.0, description="λ of L_help: distillation to the original "
                               "model on retain prompts/classes and on forget images under unrelated conditioning.")
    help_null: bool = Field(True, description="Also distil ∅ (the null class / empty prompt) in L_help; classifier-"
                            "free guidance uses it for every prompt.", json_schema_extra=ADV)
    batch: int = Field(16, ge=1, le=1024, description="Forget samples per step.", json_schema_extra=ADV)
    retain_batch: int = Field(16, ge=1, le=1024, description="Retain samples per step.", json_schema_extra=ADV)
    forget_samples: int = Field(48, ge=1, le=10_000, description="Images of the concept the original model "
                                "generates once at the start (used when no forget images are given).",
                                json_schema_extra=ADV)
    retain_samples: int = Field(48, ge=1, le=10_000, description="Retain images the original model generates "
                                "at the start (spread over the retain items).", json_schema_extra=ADV)
    pool_steps: int = Field(20, ge=2, le=200, description="DDIM steps for those generated images.",
                            json_schema_extra=ADV)
    guidance: float | None = Field(None, ge=1.0, le=50.0, description="Guidance for the generated images; None = "
                                   "the model's default.", json_schema_extra=ADV)
    forget_templates: tuple[str, ...] = Field(
        ("{}", "a {}", "a photo of {}", "an image of {}"), min_length=1,
        description="sd without a vocabulary: wordings of the concept that are forgotten ({} = the concept).",
        json_schema_extra=ADV)
    grad_clip: float = Field(1.0, gt=0.0, le=1000.0, description="Max global gradient norm.", json_schema_extra=ADV)
    checkpoint_every: int = Field(0, ge=0, le=100_000, description="Checkpoint every N steps (0: at cancel/end).",
                                  json_schema_extra=ADV)

    @classmethod
    def smoke(cls) -> IntegrityConfig:
        return cls(steps=2, batch=2, retain_batch=2, forget_samples=2, retain_samples=2, pool_steps=2)


class IntegrityMethod(Method):
    """What OVW and Saddle check alike before they run: the generic checks, then their input plan's."""

    def check(self, summary: ModelSummary, spec: JobSpec, config) -> None:
        super().check(summary, spec, config)
        check_inputs(self.info.key, summary, spec)


@dataclass
class Plan:
    """Resolved conditioning: forget items with their anchors, retain items, unrelated items for L_help."""

    forget: list[CondItem]
    anchors: list[CondItem]  # one per forget item
    retain: list[CondItem]
    help_items: list[CondItem]  # retain items (+ ∅): what L_help distils
    anchor_source: str = ""
    notes: list[str] = field(default_factory=list)


def vocabulary_of(bundle: ModelBundle) -> dict | None:
    voc = (bundle.meta or {}).get("vocabulary")
    return voc if isinstance(voc, dict) and {"shapes", "colours", "textures"} <= set(voc) else None


def _word_in(word: str, prompt: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", prompt) is not None


def _replace_word(prompt: str, word: str, by: str) -> str:
    return re.sub(r"\s+", " ", re.sub(rf"\b{re.escape(word)}\b", by, prompt)).strip(" ,")


def vocabulary_prompts(voc: dict) -> list[str]:
    return [f"a {c} {t} {s}" for s in voc["shapes"] for c in voc["colours"] for t in voc["textures"]]


def check_inputs(key: str, summary: ModelSummary, spec: JobSpec) -> None:
    """Checks beyond Method.check: none of the concepts may also be a retain row."""
    concepts = {c.label if c.text is None else c.text for c in spec.concepts}
    clash = [r for r in spec.retain if (r.label if r.prompt is None else r.prompt) in concepts]
    if clash:
        raise UserError(f"{key}: {clash[0].describe(summary.class_names)} is both forgotten and retained; "
                        f"remove it from the retain list")


def resolve_lr(config: IntegrityConfig, bundle: ModelBundle) -> float:
    return config.lr or (3e-3 if bundle.kind == "ddpm-cond" else 1e-3)


def resolve_group(config: IntegrityConfig, bundle: ModelBundle) -> str:
    return "cross-attn" if config.param_group == "auto" else config.param_group


class CondCache:
    """Conditioning per item, encoded once (the text encoder is never trained here)."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.rows: dict[CondItem, Cond] = {}

    def __call__(self, items: Sequence[CondItem]) -> Cond:
        missing = [i for i in dict.fromkeys(items) if i not in self.rows]
        if missing:
            with torch.no_grad():
                enc = denoise.encode(self.bundle, missing)
            for j, i in enumerate(missing):
                self.rows[i] = Cond(*(None if v is None else v[j : j + 1] for v in
                                      (enc.labels, enc.hidden, enc.text_embeds, enc.time_ids)))
        return Cond.cat([self.rows[i] for i in items])


def make_plan(run: UnlearnRun, cache: CondCache, forget: list[CondItem], retain: list[CondItem],
              forget_x0: torch.Tensor, forget_of: list[int], seed: int, config: IntegrityConfig,
              want_anchor: bool) -> Plan:
    """Anchors for the forget items with this module's defaults (see the module docstring)."""
    bundle, inputs = run.bundle, run.inputs
    s = bundle.summary
    notes: list[str] = []
    user_anchor = inputs.anchor_item if inputs.anchor is not None else "unset"
    if s.conditioning == "class":
        if user_anchor != "unset":
            anchors, source = [user_anchor] * len(forget), "given"
        elif not want_anchor:
            anchors, source = [None] * len(forget), "unused"
        else:
            cands = [c for c in range(s.num_classes) if c not in forget]
            best = closest(run, cache, forget_x0, forget_of, forget, [[c] * len(forget) for c in cands], seed)
            anchors, source = [cands[best]] * len(forget), "closest other class"
    else:
        concepts = [c.text for c in inputs.concepts]
        word_of = {p: next((c for c in concepts if _word_in(c, p) or c in p), "") for p in forget}
        if user_anchor != "unset":
            by = user_anchor or ""
            anchors, source = [_replace_word(p, word_of[p], by) for p in forget], "given"
        elif not want_anchor:
            anchors, source = [None] * len(forget), "unused"
        else:
            voc = vocabulary_of(bundle)
            sib = _siblings(voc, concepts) if voc else None
            if sib:
                options = [[_replace_word(p, word_of[p], w) for p in forget] for w in sib]
                best = closest(run, cache, forget_x0, forget_of, forget, options, seed)
                anchors, source = options[best], f"closest sibling word '{sib[best]}'"
            else:
                anchors = [_replace_word(p, word_of[p], "") or None for p in forget]
                source = "concept removed from the prompt"
        anchors = [a if a else None for a in anchors]
    help_items = list(retain) + ([None] if config.help_null and None not in retain else [])
    return Plan(forget, anchors, retain, help_items, source, notes)


def forget_items(run: UnlearnRun, config: IntegrityConfig) -> list[CondItem]:
    s = run.bundle.summary
    if s.conditioning == "class":
        return list(dict.fromkeys(run.inputs.forget_items))
    concepts = [c.text for c in run.inputs.concepts]
    voc = vocabulary_of(run.bundle)
    out: list[CondItem] = []
    for c in concepts:
        found = [p for p in vocabulary_prompts(voc) if _word_in(c, p)] if voc else []
        out += found or [t.format(c) for t in config.forget_templates]
    return list(dict.fromkeys(out))


def retain_items(run: UnlearnRun, forget: list[CondItem]) -> list[CondItem]:
    s = run.bundle.summary
    given = [i for i in run.inputs.retain_items if i not in forget]
    if given:
        return list(dict.fromkeys(given))
    if s.conditioning == "class":
        return [c for c in range(s.num_classes) if c not in forget]
    voc = vocabulary_of(run.bundle)
    if voc:
        concepts = [c.text for c in run.inputs.concepts]
        return [p for p in vocabulary_prompts(voc) if not any(_word_in(c, p) for c in concepts)]
    raise UserError("give retain prompts (what must stay unchanged): this model has no vocabulary to derive them")


def _siblings(voc: dict, concepts: list[str]) -> list[str] | None:
    if len(concepts) != 1:
        return None
    for head in ("shapes", "colours", "textures"):
        if concepts[0] in voc[head]:
            return [w for w in voc[head] if w != concepts[0]]
    return None


@torch.no_grad()
def closest(run: UnlearnRun, cache: CondCache, x0: torch.Tensor, x0_item: list[int], forget: list[CondItem],
            options: list[list[CondItem]], seed: int, n: int = 32) -> int:
    """Index of the option (one anchor per forget item) whose original predictions on the forget samples
    are closest to the forget item's own."""
    bundle = run.bundle
    g = torch.Generator().manual_seed(seed + 7)
    idx = torch.randperm(len(x0), generator=g)[:n]
    x0b = x0[idx]
    t = denoise.random_timesteps(len(idx), g, bundle, low=50)
    noise = denoise.noise_like(tuple(x0b.shape), g, bundle)
    x_t = denoise.add_noise(bundle, x0b, noise, t)
    items = [forget[x0_item[i]] for i in idx.tolist()]
    ref = denoise.predict(bundle, x_t, t, cache(items))
    dists = []
    for opt in options:
        a_items = [opt[x0_item[i]] for i in idx.tolist()]
        dists.append(float((denoise.predict(bundle, x_t, t, cache(a_items)) - ref).pow(2).mean()))
    return min(range(len(options)), key=lambda k: dists[k])


@torch.no_grad()
def generate_pool(bundle: ModelBundle, cache: CondCache, items: list[CondItem], n: int, steps: int,
                  guidance: float, seed: int, ctx, batch: int = 64) -> tuple[torch.Tensor, list[int]]:
    """n samples x0 (in the UNet's space) of the original model, spread round-robin over `items`;
    returns the samples and each one's index into `items`. DDIM with classifier-free guidance."""
    from diffusers import DDIMScheduler

    which = [i % len(items) for i in range(n)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for b0 in range(0, n, batch):
        part = which[b0 : b0 + batch]
        cond = cache([items[i] for i in part])
        uncond = cache([None] * len(part))
        sched = DDIMScheduler.from_config(bundle.scheduler.config)
        sched.set_timesteps(steps, device=bundle.device)
        x = denoise.noise_like((len(part), *denoise.x_shape(bundle)), g, bundle) * sched.init_noise_sigma
        for t in sched.timesteps:
            ctx.check_cancelled()
            eps = denoise.predict_cfg(bundle, sched.scale_model_input(x, t), t, cond, uncond, guidance)
            x = sched.step(eps, t, x).prev_sample
        out.append(x)
    return torch.cat(out), which


def noised(bundle: ModelBundle, x0: torch.Tensor, n: int, g: torch.Generator):
    """n random pool members noised at uniform timesteps: (indices, x_t, t, noise)."""
    idx = torch.randint(0, len(x0), (n,), generator=g)
    t = denoise.random_timesteps(n, g, bundle)
    noise = denoise.noise_like((n, *x0.shape[1:]), g, bundle)
    return idx, denoise.add_noise(bundle, x0[idx], noise, t), t, noise


@dataclass
class Pools:
    forget_x0: torch.Tensor
    forget_of: list[int]  # index into Plan.forget
    retain_x0: torch.Tensor
    retain_of: list[int]  # index into Plan.retain


def help_batch(bundle: ModelBundle, plan: Plan, pools: Pools, config: IntegrityConfig, g: torch.Generator):
    """Inputs of L_help for one step: retain samples under their own conditioning, and forget samples under
    unrelated conditioning (a random help item: another class/prompt or ∅). Returns (x_t, t, items)."""
    n = config.retain_batch
    ri, rx, rt, _ = noised(bundle, pools.retain_x0, n, g)
    r_items = [plan.retain[pools.retain_of[i]] for i in ri.tolist()]
    m = max(1, n // 2)
    fi, fx, ft, _ = noised(bundle, pools.forget_x0, m, g)
    pick = torch.randint(0, len(plan.help_items), (n + m,), generator=g).tolist()
    # half of the retain samples are distilled under ∅/other items too, so ∅ sees in-distribution x_t
    r_items = [r_items[k] if k % 2 == 0 else plan.help_items[pick[k]] for k in range(n)]
    u_items = [plan.help_items[pick[n + k]] for k in range(m)]
    return torch.cat([rx, fx]), torch.cat([rt, ft]), r_items + u_items


@contextmanager
def only_forget_rows(params: dict[str, torch.nn.Parameter], plan: Plan) -> Iterator[None]:
    """ddpm-cond: while training, only the forget classes' rows of the class embedding get gradients; the
    retained classes' and ∅'s rows stay exactly as they were (Adam would otherwise turn the help term's tiny
    gradients on them into full-size steps)."""
    p = params.get("unet.class_embedding.weight")
    labels = [i for i in plan.forget if isinstance(i, int)]
    if p is None or not labels:
        yield
        return
    mask = torch.zeros(p.shape[0], 1, dtype=p.dtype, device=p.device)
    mask[labels] = 1
    p.requires_grad_(True)  # the training loop sets it too (and clears it at the end)
    handle = p.register_hook(lambda grad: grad * mask)
    try:
        yield
    finally:
        handle.remove()


def prepare(run: UnlearnRun, config: IntegrityConfig, want_anchor: bool):
    """Generate (or load) the pools and resolve the plan. Deterministic from the job seed."""
    bundle = run.bundle
    s = bundle.summary
    seed = run.spec.seed
    guidance = config.guidance or s.default_guidance
    cache = CondCache(bundle)
    forget = forget_items(run, config)
    retain = retain_items(run, forget)  # refuses early when it cannot be derived
    if run.inputs.images is not None:
        fx0 = denoise.images_to_x0(bundle, run.inputs.images)
        own = run.inputs.image_items or [forget[0]] * len(fx0)
        forget = list(dict.fromkeys(list(forget) + list(own)))
        f_of = [forget.index(i) for i in own]
    else:
        fx0, f_of = generate_pool(bundle, cache, forget, config.forget_samples, config.pool_steps, guidance,
                                  seed * 7919 + 1, run.ctx)
    plan = make_plan(run, cache, forget, retain, fx0, f_of, seed, config, want_anchor)
    rx0, r_of = generate_pool(bundle, cache, plan.retain, config.retain_samples, config.pool_steps, guidance,
                              seed * 7919 + 2, run.ctx)
    return plan, Pools(fx0, f_of, rx0, r_of), cache
