"""ESD: the forget plan on a vocabulary model and the per-prompt reference of the negative-guidance target."""

from __future__ import annotations

from types import SimpleNamespace

from concept_eraser.demo.shapes_data import vocabulary
from concept_eraser.methods.esd import EsdConfig, _without, concept_of, plan_items


def _run(concepts, retain=()):
    bundle = SimpleNamespace(meta={"vocabulary": vocabulary()}, summary=SimpleNamespace(conditioning="text"))
    inputs = SimpleNamespace(forget_items=list(concepts), retain_items=list(retain))
    return SimpleNamespace(bundle=bundle, inputs=inputs)


def test_forget_prompts_and_retain_prompts_from_the_vocabulary():
    run = _run(["triangle"])
    forget, retain = plan_items(run)
    assert forget[0] == "triangle" and len(forget) == 1 + 4 * 3
    assert all("triangle" in p for p in forget) and retain and not any("triangle" in p for p in retain)
    assert concept_of(run, forget) == [0] * len(forget)


def test_reference_prompt_leaves_the_concept_and_its_synonyms_out():
    bundle = _run(["striped"]).bundle
    assert _without(bundle, "a red striped circle", "striped") == "a red circle"
    assert _without(bundle, "a red stripy circle", "striped") == "a red circle"
    assert _without(bundle, "striped", "striped") is None  # the bare concept: ∅, the paper's reference
    assert _without(bundle, 3, 3) is None  # class labels: the null class


def test_two_concepts_each_prompt_names_its_own():
    run = _run(["triangle", "striped"])
    forget, _ = plan_items(run)
    owners = concept_of(run, forget)
    assert all(("striped" in p) if o == 1 else ("triangle" in p) for p, o in zip(forget, owners, strict=True))
    assert EsdConfig().target == "siblings"


def test_sibling_references_replace_the_concept_by_the_other_values_of_its_attribute():
    from concept_eraser.methods.esd import _siblings, _swap

    bundle = _run(["triangle"]).bundle
    assert _siblings(bundle, "triangle") == ["circle", "square", "star"]
    assert _siblings(bundle, "striped") == ["solid", "outlined"]
    assert _siblings(bundle, "a red triangle") == [] and _siblings(SimpleNamespace(meta={}), "triangle") == []
    assert _swap("a red solid triangle", "triangle", "star") == "a red solid star"
    assert _swap("a red solid square", "triangle", "star") is None
