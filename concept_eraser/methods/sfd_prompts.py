"""SFD's conditioning on text-to-image models: what the one-step generator is distilled on, and the
(forget prompt, override prompt) pairs of the forget term.

SFD is data-free, so the prompt distribution *is* the training distribution: the generator only learns
the prompts it is asked for. The paper's SD runs distil on a prompt set (COCO captions) and build each
forget prompt's override by swapping the concept for the safe one (celebrity → "a person", nudity → a
dressed prompt). Here:

- Models with a vocabulary (the shapes demo's meta: shapes × colours × textures, caption templates,
  synonyms): every attribute triple in every caption template, with the base words and with each
  synonym on its own (`vocabulary_captions`). Stage 1 distils all of them. For the forget term, the forget
  prompts are the captions whose triple has the concept's value (found by base word or synonym, so
  "striped", "stripy", "banded" and "with stripes" all count); each one's override is *the same caption*
  (template, other words, synonyms) with that value replaced by the anchor: "a red striped circle" →
  "a red solid circle", "crimson circle with stripes" → "crimson circle solid". Retained prompts are the
  captions without the concept value (plus the user's retain prompts).
- Models without a vocabulary: the concept in a few wordings (`templates`) is forgotten, each mapped to
  the same wording of the anchor; retained = the user's retain prompts + the anchor wordings (required:
  we cannot guess what must stay, the same rule as OVW/Saddle).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from concept_eraser.spec.runloop import UserError

HEADS = ("shapes", "colours", "textures")  # triple order (shape, colour, texture)


@dataclass(frozen=True)
class PromptPlan:
    retain: list[str]  # stage 2: prompts distilled without forgetting
    forget: list[str]  # stage 2: prompts whose generator output is pulled to the override's teacher score
    override: list[str]  # one per forget prompt
    source: str

    @property
    def everything(self) -> list[str]:
        """Stage 1 (distil all, no forgetting): retained and forget prompts alike."""
        return list(dict.fromkeys(self.retain + self.forget))


def _caption(voc: dict, triple: tuple[str, str, str], template: int, words: dict[str, str]) -> str:
    s, c, t = (words.get(w, w) for w in triple)
    tp = voc["texture_phrases"].get(triple[2], "{t}").format(t=t)
    return voc["templates"][template].format(c=c, t=t, s=s, tp=tp)


def _variants(voc: dict, triple: tuple[str, str, str]) -> list[dict[str, str]]:
    """Base words, and each word replaced by each of its synonyms on its own."""
    syn = voc.get("synonyms", {})
    return [{}] + [{w: v} for w in triple for v in syn.get(w, ())]


def vocabulary_captions(voc: dict) -> list[tuple[str, tuple[str, str, str], int, dict[str, str]]]:
    """(caption, triple, template, words) for every triple × template × synonym variant, deduplicated."""
    out, seen = [], set()
    for s in voc["shapes"]:
        for c in voc["colours"]:
            for t in voc["textures"]:
                for k in range(len(voc["templates"])):
                    for words in _variants(voc, (s, c, t)):
                        cap = _caption(voc, (s, c, t), k, words)
                        if cap not in seen:
                            seen.add(cap)
                            out.append((cap, (s, c, t), k, words))
    return out


def base_word(voc: dict, word: str) -> tuple[int, str] | None:
    """(index of the attribute in the triple, base word) for a vocabulary word or synonym."""
    w = word.strip().lower()
    for i, head in enumerate(HEADS):
        for base in voc[head]:
            if w == base or w in voc.get("synonyms", {}).get(base, ()):
                return i, base
    return None


def _templated(templates: tuple[str, ...], word: str) -> list[str]:
    return list(dict.fromkeys(t.format(word) for t in templates))


def sd_plan(voc: dict | None, concept: str, anchor: str, retain_prompts: list[str],
            templates: tuple[str, ...]) -> PromptPlan:
    """The prompt plan for forgetting `concept` onto `anchor` (see the module docstring)."""
    if voc is not None:
        where = base_word(voc, concept)
        if where is not None:
            i, value = where
            to = base_word(voc, anchor)
            if to is None or to[0] != i:
                raise UserError(f"sfd: the anchor {anchor!r} must be another {HEADS[i][:-1]} of this model's "
                                f"vocabulary ({', '.join(w for w in voc[HEADS[i]] if w != value)}), like the concept "
                                f"{concept!r}")
            forget, override, retain = [], [], []
            for cap, triple, k, words in vocabulary_captions(voc):
                if triple[i] != value:
                    retain.append(cap)
                    continue
                new = list(triple)
                new[i] = to[1]
                words = {w: v for w, v in words.items() if w != value}
                if anchor.strip().lower() != to[1]:
                    words[to[1]] = anchor.strip().lower()  # the anchor's own wording (a synonym) is kept
                forget.append(cap)
                override.append(_caption(voc, tuple(new), k, words))
            extra = [p for p in retain_prompts if p not in retain and not _mentions(voc, p, i, value)]
            return PromptPlan(retain + extra, forget, override,
                              f"vocabulary: {len(forget)} captions with {value!r} → {to[1]!r}, "
                              f"{len(retain) + len(extra)} retained captions")
    if not retain_prompts:
        raise UserError("sfd needs retain prompts on this model (what the one-step generator must still draw): "
                        "give --retain ...; it has no vocabulary to derive them from")
    forget = _templated(templates, concept)
    override = _templated(templates, anchor)
    if len(override) != len(forget):
        raise UserError("sfd: forget templates must give distinct wordings for the concept and the anchor")
    retain = list(dict.fromkeys([p for p in retain_prompts if not _has_word(concept, p)] + override))
    return PromptPlan(retain, forget, override, f"templates: {len(forget)} wordings of {concept!r} → {anchor!r}")


def _has_word(word: str, prompt: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", prompt, flags=re.IGNORECASE) is not None


def _mentions(voc: dict, prompt: str, i: int, value: str) -> bool:
    return any(_has_word(w, prompt) for w in (value, *voc.get("synonyms", {}).get(value, ())))


def stage1_prompts(voc: dict | None, prompts: list[str] | None = None) -> list[str]:
    """Prompts of a stage-1 distillation made once per model (the shipped shapes-onestep): the whole
    vocabulary when there is one, else the given prompts."""
    if voc is not None:
        return [cap for cap, *_ in vocabulary_captions(voc)]
    if not prompts:
        raise UserError("a stage-1 distillation of a model without a vocabulary needs a prompt list")
    return list(dict.fromkeys(prompts))
