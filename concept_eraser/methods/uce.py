"""UCE: Unified Concept Editing (Gandikota, Orgad, Belinkov, Materzyńska, Bau; WACV 2024).

A closed-form edit of every text cross-attention projection (`attn2.to_k`, `attn2.to_v`) of the UNet; no
images, no training loop, seconds on a CPU. For each projection W_old (out x d) the paper's Eq. 7 is the
minimiser of

    Σ_erase ‖W c_i − v*_i‖²  +  s_p Σ_preserve ‖W c_j − W_old c_j‖²  +  λ ‖W − W_old‖²_F

(with erase weight s_e on the first sum), i.e.

    W_new = (s_e Σ_i v*_i c_iᵀ + s_p Σ_j W_old c_j c_jᵀ + λ W_old) (s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ + λ I)⁻¹

where c_i are text-encoder output vectors ("keys" of the edit) of the concept to erase, v*_i = W_old c_g(i)
the original projection of the guide concept's vector at the aligned position, c_j vectors of the
concepts/prompts to preserve, λ (`lamb`) the ridge towards the old weights, s_e / s_p the erase / preserve
scales. Names follow the official code (rohitgandikota/unified-concept-editing, trainscripts/uce_sd_erase.py:
lamb=0.5, erase_scale=1, preserve_scale=1). The system is solved in float64 whatever the model's dtype.

Because v*_i = W_old c_g(i) and every layer reads the same text embeddings, W_new = W_old · M with one d x d
matrix M shared by every layer; we still solve and report per layer (progress, cancel, residuals).

Which vectors (our reconstruction, documented because the paper leaves it to the code):
- The official 2025 code takes only the concept's last token, with the concept text alone as the prompt.
  The older code ("technique" replace) stacked the concept's last token plus every following EOS/padding
  position. A causal CLIP text encoder writes a concept into every later position (the next words, EOS and
  the padding the UNet also attends to), so erasing the concept's own token leaves it in the rest of the
  prompt. Our default `tokens="concept+after"` takes the concept's tokens and every later position,
  padding included; "concept" takes only its tokens, "last" only its last token (the 2025 code).
- Contexts: the concept is embedded inside every `contexts` template ("{}" = the concept alone, "a {}", ...
  like the official `--expand_prompts`) and inside the full `erase_prompts` the user gives (prompts that
  contain the concept text, e.g. the model's own caption styles). Positions before the concept are the same
  in the guide prompt; we add them to the preserve set (they must keep their values).
- Token alignment with the guide: the guide prompt is the erase prompt with the concept text replaced by the
  guide text. Concept token t of m maps to guide token ⌊t·k/m⌋ of k; with an empty guide (k = 0) every
  concept token maps to the start token (as the 2025 code's "" guide does). Later positions map to the
  guide prompt's positions shifted by k − m (clamped to the last position).
- Preserve keys: every position of each preserve prompt (the job's retain prompts, `preserve` texts placed
  in the same contexts, and always "" so classifier-free guidance's unconditional branch keeps its values),
  plus the erase prompts' positions before the concept. `padding_weight` < 1 down-weights padding keys.

Choosing the guide: UCE maps the concept onto the guide, so the model then draws what it draws for the guide.
With the empty guide it draws what the prompt without the concept gives, i.e. the model's prior for the
missing attribute; on the shapes demo a prompt without a texture is striped 92% of the time, so forgetting
"striped" needs a guide such as "solid", while "triangle" works with "" (shape-less prompts give squares).
See bench/uce_shapes.py for the judged outcome.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, field_validator

from concept_eraser.spec.events import Event, Log, Progress, StageStarted
from concept_eraser.spec.registry import MethodConfig, MethodInfo, Needs
from concept_eraser.spec.runloop import UserError

from .base import Method

if TYPE_CHECKING:
    from concept_eraser.engine.bundle import ModelBundle
    from concept_eraser.engine.unlearn import UnlearnRun

DEFAULT_CONTEXTS = ("{}", "a {}", "an image of {}", "a picture of {}", "a photo of {}", "a drawing of {}")


class UCEConfig(MethodConfig):
    guide: str = Field("", description="Guide concept the erased one is mapped onto when the job gives no anchor "
                       "('' = nothing; 'art' for artistic styles in the paper).")
    erase_scale: float = Field(1.0, gt=0.0, le=1e4, description="Weight s_e of the erase term (lower it if "
                               "images turn noisy).")
    preserve_scale: float = Field(1.0, ge=0.0, le=1e4, description="Weight s_p of the preserve term (0 = keep "
                                  "nothing but the ridge).")
    lamb: float = Field(0.5, gt=0.0, le=1e6, description="Ridge λ towards the old weights (the paper's "
                        "regulariser).", json_schema_extra={"advanced": True})
    tokens: Literal["concept+after", "concept", "last"] = Field(
        "concept+after", description="Which positions are erase keys: the concept's tokens and every later one "
        "(padding included), only its tokens, or only its last token (the 2025 official code).",
        json_schema_extra={"advanced": True})
    contexts: tuple[str, ...] = Field(DEFAULT_CONTEXTS, description="Templates the concept (and each preserve "
                                      "text) is placed in; '{}' marks the concept.", json_schema_extra={"advanced": True})
    erase_prompts: tuple[str, ...] = Field((), description="Extra full prompts that contain the concept text "
                                           "(e.g. in the model's usual caption styles) to erase it from.")
    preserve: tuple[str, ...] = Field((), description="Extra concepts to preserve (placed in the contexts), "
                                      "besides the job's retain prompts; e.g. the concept's siblings.")
    preserve_prompts: tuple[str, ...] = Field((), description="Extra full prompts to preserve as they are.")
    padding_weight: float = Field(1.0, ge=0.0, le=1.0, description="Weight of padding positions (after the end "
                                  "token) among the erase and preserve keys; 0 leaves them out.",
                                  json_schema_extra={"advanced": True})

    @field_validator("contexts")
    @classmethod
    def _contexts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one context, e.g. '{}'")
        for c in v:
            if c.count("{}") != 1 or "{" in c.replace("{}", "") or "}" in c.replace("{}", ""):
                raise ValueError(f"context {c!r} must contain '{{}}' exactly once (where the concept goes)")
        return v

    @classmethod
    def smoke(cls) -> UCEConfig:
        return cls(contexts=("{}",))


@dataclass
class KeySet:
    """Text-embedding vectors stacked as rows: erase keys C_e, their guide vectors C_g, preserve keys C_p."""

    erase: torch.Tensor  # (n_e, d) float64
    guide: torch.Tensor  # (n_e, d)
    preserve: torch.Tensor  # (n_p, d)
    erase_prompts: list[str]


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def _content_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def _replace(prompt: str, concept: str, guide: str) -> str:
    return " ".join(prompt.replace(concept, guide, 1).split())


def _hidden(bundle: ModelBundle, prompts: list[str], batch: int = 64) -> torch.Tensor:
    from concept_eraser.engine.denoise import encode

    outs = [encode(bundle, prompts[i : i + batch]).hidden for i in range(0, len(prompts), batch)]
    return torch.cat(outs).to(torch.float64).cpu()


def collect_keys(bundle: ModelBundle, concepts: list[str], guides: list[str], erase_prompts: list[str],
                 preserve_prompts: list[str], tokens: str, padding_weight: float = 1.0) -> KeySet:
    """Erase keys and token-aligned guide vectors for each concept in each of its erase prompts, and preserve keys.

    `erase_prompts` may hold prompts of any concept: each concept is looked up in each prompt (a prompt without a
    given concept is skipped for it; a concept found in no prompt is an error).
    """
    tok = bundle.tokenizer
    length = tok.model_max_length
    rows: list[tuple[str, str, list[int], list[int], list[float]]] = []  # prompt, guide, erase/guide pos, weights
    prefix: list[tuple[str, int]] = []  # (prompt, n positions before the concept) -> preserve
    for concept, guide in zip(concepts, guides, strict=True):
        cids = _content_ids(tok, concept)
        if not cids:
            raise UserError(f"concept {concept!r} has no tokens for this model's tokenizer")
        k = len(_content_ids(tok, guide))
        found = 0
        for p in erase_prompts:
            if concept not in p:
                continue
            ids = tok(p, truncation=True, max_length=length).input_ids
            start = _find(ids, cids)
            if start < 0:  # the text occurs inside another word, or was cut off
                continue
            found += 1
            m = len(cids)
            if tokens == "last":
                pos = [start + m - 1]
            elif tokens == "concept":
                pos = list(range(start, start + m))
            else:
                pos = list(range(start, length))
            gpos = []
            for q in pos:
                t = q - start
                if t < m:
                    gpos.append(start + (t * k) // m if k else 0)
                else:
                    gpos.append(min(q + k - m, length - 1))
            wts = [padding_weight if q >= len(ids) else 1.0 for q in pos]  # len(ids) = first padding position
            rows.append((p, _replace(p, concept, guide), pos, gpos, wts))
            if start > 0:
                prefix.append((p, start))
        if not found:
            raise UserError(f"the concept {concept!r} occurs in none of the erase prompts; check its spelling")
    prompts = list(dict.fromkeys([r[0] for r in rows] + [r[1] for r in rows] + preserve_prompts))
    index = {p: i for i, p in enumerate(prompts)}
    hidden = _hidden(bundle, prompts)
    root = [torch.tensor(w, dtype=torch.float64).sqrt()[:, None] for *_, w in rows]
    erase = torch.cat([hidden[index[p], pos] * r for (p, _, pos, _, _), r in zip(rows, root, strict=True)])
    guide_v = torch.cat([hidden[index[g], gpos] * r for (_, g, _, gpos, _), r in zip(rows, root, strict=True)])
    keep = [hidden[index[p], :n] for p, n in prefix]
    for p in preserve_prompts:
        n = len(tok(p, truncation=True, max_length=length).input_ids)
        w = torch.ones(length, 1, dtype=torch.float64)
        w[n:] = padding_weight ** 0.5
        keep.append(hidden[index[p]] * w)
    d = hidden.shape[-1]
    preserve = torch.cat(keep) if keep else torch.zeros(0, d, dtype=torch.float64)
    keep_rows = preserve.norm(dim=1) > 0  # padding_weight 0 drops padding keys
    erase_rows = erase.norm(dim=1) > 0
    return KeySet(erase[erase_rows], guide_v[erase_rows], preserve[keep_rows], [r[0] for r in rows])


def edit_matrix(keys: KeySet, erase_scale: float, preserve_scale: float, lamb: float) -> torch.Tensor:
    """M (d x d, float64) with W_new = W_old · M for every projection (Eq. 7 with v*_i = W_old c_g(i))."""
    ce, cg, cp = keys.erase, keys.guide, keys.preserve
    eye = torch.eye(ce.shape[1], dtype=torch.float64)
    keep = preserve_scale * cp.T @ cp
    num = lamb * eye + erase_scale * cg.T @ ce + keep  # right factor of mat1 = W_old (λI + s_e C_gᵀC_e + s_p C_pᵀC_p)
    den = lamb * eye + erase_scale * ce.T @ ce + keep
    # M = num · den⁻¹; den is symmetric positive definite
    return torch.linalg.solve(den, num.T).T


def residuals(w_old: torch.Tensor, w_new: torch.Tensor, keys: KeySet) -> tuple[float, float]:
    """Relative residuals: ‖W_new C_e − W_old C_g‖/‖W_old C_g‖ and ‖W_new C_p − W_old C_p‖/‖W_old C_p‖."""
    e = (keys.erase @ w_new.T - keys.guide @ w_old.T).norm() / (keys.guide @ w_old.T).norm().clamp_min(1e-12)
    if len(keys.preserve) == 0:
        return float(e), 0.0
    p = (keys.preserve @ (w_new - w_old).T).norm() / (keys.preserve @ w_old.T).norm().clamp_min(1e-12)
    return float(e), float(p)


def kv_modules(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    return [(f"{n}", m) for n, m in unet.named_modules()
            if ".attn2." in f".{n}" and n.rsplit(".", 1)[-1] in ("to_k", "to_v") and isinstance(m, torch.nn.Linear)]


def _words_in_contexts(words: list[str], contexts: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(c.format(w) for w in words for c in contexts))


class UCE(Method):
    info = MethodInfo(
        key="uce",
        title="UCE (unified concept editing)",
        paper="Gandikota et al., Unified Concept Editing in Diffusion Models, WACV 2024",
        summary="Closed-form edit of the cross-attention keys/values: the concept's text now reads like the guide "
                "concept, preserved concepts keep theirs. Seconds, no images, no training; weak against "
                "paraphrases and attacks.",
        model_kinds=frozenset({"sd", "sdxl"}),
        needs=Needs(concept=True),
        edits=("unet",),  # only its attn2.to_k / attn2.to_v weights
    )
    Config = UCEConfig
    estimate = "seconds on a CPU (text encoding and one small solve per layer)"

    def run(self, run: UnlearnRun, config: UCEConfig) -> Generator[Event, None, dict[str, float]]:
        t0 = time.perf_counter()
        bundle = run.bundle
        concepts = [str(c) for c in run.inputs.forget_items if c is not None]
        if not concepts:
            raise UserError("uce needs a concept text to erase")
        anchor = run.inputs.anchor_item
        guide = str(anchor) if anchor is not None else config.guide
        if any(guide.strip() == c.strip() for c in concepts):
            raise UserError(f"the guide concept {guide!r} is the concept to erase; pick another guide or none")
        retain = [str(r) for r in run.inputs.retain_items if r is not None]
        erase_prompts = _words_in_contexts(concepts, config.contexts) + list(config.erase_prompts)
        preserve = (_words_in_contexts(list(config.preserve), config.contexts) + list(config.preserve_prompts)
                    + retain + [""])  # "" keeps the unconditional branch of classifier-free guidance
        clash = [p for p in preserve if any(re.search(rf"(?<!\w){re.escape(c)}(?!\w)", p) for c in concepts)]
        if clash:
            raise UserError(f"preserve prompt {clash[0]!r} contains a concept to erase; remove it from the retain "
                            "prompts or preserve texts")
        yield StageStarted("encode", total=None)
        with torch.no_grad():
            keys = collect_keys(bundle, concepts, [guide] * len(concepts), erase_prompts, preserve, config.tokens,
                                config.padding_weight)
            m = edit_matrix(keys, config.erase_scale, config.preserve_scale, config.lamb)
        yield Log("info", f"uce: {len(keys.erase)} erase keys from {len(keys.erase_prompts)} prompts, "
                  f"{len(keys.preserve)} preserve keys, guide {guide!r}")
        mods = kv_modules(bundle.unet)
        if not mods:
            raise UserError("this UNet has no text cross-attention (attn2.to_k/to_v) to edit")
        yield StageStarted("edit", total=len(mods))
        res_e, res_p = [], []
        with torch.no_grad():
            for i, (_name, mod) in enumerate(mods):
                run.ctx.check_cancelled()
                w_old = mod.weight.detach().to("cpu", torch.float64)
                w_new = w_old @ m
                e, p = residuals(w_old, w_new, keys)
                res_e.append(e)
                res_p.append(p)
                mod.weight.copy_(w_new.to(mod.weight.device, mod.weight.dtype))
                yield Progress("edit", i + 1, len(mods), {"erase_residual": e, "preserve_residual": p})
        stats = {"layers_edited": float(len(mods)), "erase_keys": float(len(keys.erase)),
                 "preserve_keys": float(len(keys.preserve)),
                 "erase_residual": sum(res_e) / len(res_e), "preserve_residual": sum(res_p) / len(res_p),
                 "seconds": time.perf_counter() - t0}
        return stats
