"""Who decides whether a generated image shows a concept (shared by the leak tests and the interference matrix).

    judge_fn, description = recogniser(original_bundle, concept)
    judge_fn(images uint8 (N, H, W, 3)) -> bool (N,)

- digits demo: the digits judge says the concept's class (label, "3" or "three").
- shapes demo: the shapes judge's head for the concept's attribute says the concept's value (a base
  word or a synonym: "stripy" is judged as striped).
- any other SD 1.x/2.x model: the diffusion classifier with the *original* model as judge (concept
  prompt vs the empty prompt; recognised = the concept wins, score > 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concept_eraser.spec.jobspec import Concept
from concept_eraser.spec.runloop import UserError

JudgeFn = Callable[[np.ndarray], np.ndarray]
_JUDGES: dict[str, object] = {}


def demo_judge(demo: str):
    if demo not in _JUDGES:
        from .judged import load_demo_judge

        _JUDGES[demo] = load_demo_judge(demo)
    return _JUDGES[demo]


def concept_of(item) -> Concept:
    if isinstance(item, Concept):
        return item
    if isinstance(item, int):
        return Concept(label=item)
    return Concept(text=str(item))


def concept_name(item) -> str:
    c = concept_of(item)
    return str(c.label) if c.label is not None else str(c.text)


def recogniser(original, concept, dc_timesteps: int = 10) -> tuple[JudgeFn, str]:
    """A judge function for `concept` (Concept, label or text) on images of the model `original`."""
    c = concept_of(concept)
    s = original.summary
    if s.name == "digits":
        from .judged import digit_label

        k = digit_label(c)
        judge = demo_judge("digits")
        return (lambda im: np.asarray(judge.predict(np.asarray(im))) == k), f"digits-judge says class {k}"
    if s.name == "shapes":
        from concept_eraser.demo.shapes_data import HEADS

        from .judged import shapes_word

        if c.text is None:
            raise UserError("shapes-demo concepts are words (e.g. 'striped'), not class labels")
        attr, word = shapes_word(c.text)
        idx = HEADS[attr].index(word)
        judge = demo_judge("shapes")
        return (lambda im: np.asarray(judge.predict(np.asarray(im))[attr]) == idx), \
            f"shapes-judge {attr} head says '{word}'"
    if s.kind == "sd":
        if c.text is None:
            raise UserError("text-conditioned models take concept texts, not class labels")
        from .diffusion_classifier import diffusion_classifier

        text = c.text

        def fn(im):
            return diffusion_classifier(original, np.asarray(im), text, "", timesteps=dc_timesteps).per_image > 0

        return fn, (f"diffusion classifier with the original model: '{text}' vs the empty prompt wins "
                    f"({dc_timesteps} timesteps)")
    raise UserError(f"no judge for {s.kind} model {s.name or s.source!r}: recognition needs a demo model's judge or "
                    f"a Stable Diffusion 1.x/2.x model")
