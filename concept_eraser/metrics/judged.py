"""Judge-based erasure and retention for the bundled demo models (digits, shapes).

The unlearn job calls two functions:

    plan = demo_eval_plan(demo, concepts, samples=100, seed0=1000)   # rows x seeds to sample
    spec = plan.sampling_spec(steps=..., guidance=...)                # the same spec before and after
    scores = demo_scores(plan, before, after, judge=None)             # flat dict of floats

`before` and `after` are same-seed grids of `plan.rows` x `plan.seeds` from the original and the
unlearned model (identical sampling spec). The judge defaults to the demo's shipped judge.

digits (class-conditional DDPM; concepts are class labels, or texts naming a digit):
  rows: one per class 0-9 (role "forget" for the forget classes, "retain_in" for the others) and one
  "unconditional" row.
  acc_before/<k>, acc_after/<k>   judged accuracy of class-k rows (share judged as k)
  ua                              1 - accuracy after on the forget class(es) (mean over them)
  ua_before                       the same on the original model (its miss rate)
  retain_acc_before, retain_acc_after   mean accuracy over the retained classes
  retain_drop/<k>, retain_drop_max      acc_before - acc_after per retained class, and the largest
  ira, ira_before, ira_rel        = retain_acc_after, retain_acc_before, their ratio
  share_before/<k>, share_after/<k>     share of unconditional samples judged as class k
  n_before, n_after, pul          forget-class counts among the unconditional samples and
                                  PUL = 100 (n_before - n_after) / n_before (NaN when n_before = 0)
  pul/<k>                         PUL of every class
  unconditional_samples           how many unconditional samples the shares and PUL rest on
  forget_class_from_images        VDU by images (no label in the plan): pass forget_images= to
                                  demo_scores; the judge's majority class of those images becomes
                                  the forget class for ua/pul/n_before/n_after

shapes (tiny SD; a concept is a shape, colour or texture word, or one of its synonyms):
  rows: prompts "a {colour} {texture} {shape}". "forget" rows contain the forget value, with a
  balanced set of the other two attributes; "retain_in" rows use the other values of the forget
  value's attribute (none of the forget values); each retain row serves both IRA (the forget
  attribute) and CRA (the other two attributes), so shapes plans need no separate "retain_cross"
  rows. Values are balanced greedily over distinct triples: 12 rows for one concept (4 forget +
  8 retain), 12-14 for two or three.
  ua, ua_before                   share of forget-row samples whose judged attribute is not the
                                  concept (after / on the original); ua/<word>, ua_before/<word>
                                  per concept
  ira, ira_before, ira_rel        retain rows: the forget attribute(s) judged correct (after, before,
                                  after/before)
  cra, cra_before, cra_rel        retain rows: the other attributes judged correct
  acc_before/<attr>, acc_after/<attr>   per attribute on the retain rows

Every value is a plain float; rates are in [0, 1] except PUL (percent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from concept_eraser.spec.events import Grid
from concept_eraser.spec.jobspec import Concept, SampleRow, SamplingSpec
from concept_eraser.spec.runloop import UserError

Role = Literal["forget", "retain_in", "retain_cross", "unconditional"]
DEMOS = ("digits", "shapes")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Cells per forward pass for the judged samples: the demo UNets run faster on CPU at 64 than at 256 (measured:
# 512 digits samples 37-47 s vs 52-59 s with 2 threads; shapes 9-11 s vs 12 s for 256); pixels do not change.
EVAL_BATCH = 64


@dataclass(frozen=True)
class EvalPlan:
    """What to sample for a demo evaluation and how to score it."""

    demo: str
    rows: list[SampleRow]
    seeds: list[int]
    roles: tuple[Role, ...]  # one per row
    targets: tuple[tuple[int, ...] | None, ...]  # digits: (label,), shapes: (shape, colour, texture); None: uncond
    forget: tuple[tuple[str, int], ...]  # digits: ("label", k); shapes: (attribute, value index)
    description: str = ""

    def rows_with(self, *roles: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r in roles]

    def sampling_spec(self, **settings) -> SamplingSpec:
        """The plan's rows and seeds as a SamplingSpec; `settings` (steps, guidance, scheduler, batch_size ...)
        are passed through, batch_size EVAL_BATCH unless given. Use the identical spec for the before and the after
        grid."""
        return SamplingSpec(rows=self.rows, seeds=self.seeds, **{"batch_size": EVAL_BATCH, **settings})


# ---------------------------------------------------------------- plans

def demo_eval_plan(demo: str, concepts: list[Concept], samples: int = 100, seed0: int = 1000) -> EvalPlan:
    """Rows, seeds and row roles for judging an erasure of `concepts` on a bundled demo model."""
    if samples < 1:
        raise UserError(f"samples must be at least 1, got {samples}")
    seeds = list(range(seed0, seed0 + samples))
    if demo == "digits":
        return _digits_plan(concepts, seeds)
    if demo == "shapes":
        return _shapes_plan(concepts, seeds)
    raise UserError(f"no judge for the model {demo!r}; judged metrics exist for the demo models {', '.join(DEMOS)}")


def digit_label(concept: Concept) -> int:
    if concept.label is not None:
        if concept.label > 9:
            raise UserError(f"class {concept.label} does not exist; the digits model has classes 0-9")
        return concept.label
    text = concept.text.strip().lower()
    found = set(re.findall(r"\d", text)) | {str(i) for i, w in enumerate(DIGIT_WORDS) if re.search(rf"\b{w}\b", text)}
    if len(found) != 1:
        raise UserError(f"cannot tell which digit {concept.text!r} means; give a class label 0-9")
    return int(found.pop())


def _digits_plan(concepts: list[Concept], seeds: list[int]) -> EvalPlan:
    forget = sorted({digit_label(c) for c in concepts})
    rows = [SampleRow(label=k) for k in range(10)] + [SampleRow()]
    roles: tuple[Role, ...] = tuple("forget" if k in forget else "retain_in" for k in range(10)) + ("unconditional",)
    targets = tuple((k,) for k in range(10)) + (None,)
    what = f"forget class(es) {', '.join(map(str, forget))}" if forget else "no forget class given (shares only)"
    desc = (f"digits: 10 class rows + 1 unconditional row x {len(seeds)} seeds "
            f"({seeds[0]}-{seeds[-1]}), judged by digits-judge; {what}")
    return EvalPlan("digits", rows, seeds, roles, targets, tuple(("label", k) for k in forget), desc)


def shapes_word(text: str) -> tuple[str, str]:
    """(attribute, base value) named by a concept text: a base word or a synonym, alone or in a phrase."""
    from concept_eraser.demo.shapes_data import HEADS, SYNONYMS

    base_of = {w: w for values in HEADS.values() for w in values}
    base_of.update({s: w for w, syns in SYNONYMS.items() for s in syns})
    words = {base_of[w] for w in re.findall(r"[a-z]+", text.lower()) if w in base_of}
    if len(words) != 1:
        raise UserError(f"{text!r} names {'no' if not words else 'more than one'} shapes-demo attribute; give one "
                        f"shape ({', '.join(HEADS['shape'])}), colour ({', '.join(HEADS['colour'])}) or texture "
                        f"({', '.join(HEADS['texture'])})")
    word = words.pop()
    attr = next(a for a, values in HEADS.items() if word in values)
    return attr, word


def _shapes_plan(concepts: list[Concept], seeds: list[int]) -> EvalPlan:
    from concept_eraser.demo.shapes_data import HEADS, caption

    if not concepts:
        raise UserError("the shapes demo needs a concept word to evaluate (a shape, colour or texture)")
    if any(c.text is None for c in concepts):
        raise UserError("shapes-demo concepts are words (e.g. 'striped'), not class labels")
    forget = sorted({shapes_word(c.text) for c in concepts}, key=lambda aw: (list(HEADS).index(aw[0]), aw[1]))
    attrs = list(HEADS)
    banned = {a: {w for fa, w in forget if fa == a} for a in attrs}
    if any(len(banned[a]) >= len(HEADS[a]) for a in attrs):
        raise UserError("cannot forget every value of an attribute; nothing would be left to retain")
    per_concept = max(2, 4 // len(forget))
    triples: list[tuple[str, str, str]] = []
    roles: list[Role] = []
    # forget rows: the forget value, the other attributes balanced over their values (others' forget values excluded)
    for a, w in forget:
        pools = {b: [w] if b == a else [v for v in HEADS[b] if v not in banned[b]] for b in attrs}
        for t in _balanced(pools, per_concept, triples):
            triples.append(t)
            roles.append("forget")
    # retain rows: no forget value anywhere; every attribute balanced over its remaining values
    pools = {a: [v for v in HEADS[a] if v not in banned[a]] for a in attrs}
    for t in _balanced(pools, 8, triples):
        triples.append(t)
        roles.append("retain_in")
    rows = [SampleRow(prompt=caption(*t)) for t in triples]
    targets = tuple(tuple(HEADS[a].index(v) for a, v in zip(attrs, t, strict=True)) for t in triples)
    fwords = ", ".join(w for _, w in forget)
    desc = (f"shapes: {roles.count('forget')} forget prompts with {fwords} + {roles.count('retain_in')} retain prompts "
            f"'a {{colour}} {{texture}} {{shape}}' x {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), judged by shapes-judge")
    return EvalPlan("shapes", rows, seeds, tuple(roles), targets,
                    tuple((a, HEADS[a].index(w)) for a, w in forget), desc)


def _balanced(pools: dict[str, list[str]], n: int, taken: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Up to n distinct (shape, colour, texture) triples from the pools, greedily keeping every value's
    count even (ties broken by a fixed interleaved order, so plans are deterministic)."""
    from itertools import product

    candidates = [t for t in product(pools["shape"], pools["colour"], pools["texture"]) if t not in taken]
    # interleave: walk the product diagonally so neighbours differ in every attribute
    candidates.sort(key=lambda t: sum((pools[a].index(v) - i) % len(pools[a]) * 10 ** i
                                      for i, (a, v) in enumerate(zip(("shape", "colour", "texture"), t, strict=True))))
    counts: dict[str, int] = {}
    out: list[tuple[str, str, str]] = []
    for _ in range(min(n, len(candidates))):
        best = min((t for t in candidates if t not in out), key=lambda t: sum(counts.get(v, 0) ** 2 for v in t))
        out.append(best)
        for v in best:
            counts[v] = counts.get(v, 0) + 1
    return out


# ---------------------------------------------------------------- scoring

def load_demo_judge(demo: str):
    if demo == "digits":
        from concept_eraser.demo.digits_judge import load_digits_judge

        return load_digits_judge()
    if demo == "shapes":
        from concept_eraser.demo.shapes_judge import load_shapes_judge

        return load_shapes_judge()
    raise UserError(f"no judge for {demo!r}")


def _check(plan: EvalPlan, grid: Grid, which: str) -> None:
    if grid.shape != (len(plan.rows), len(plan.seeds)) or tuple(grid.seeds) != tuple(plan.seeds):
        raise ValueError(f"the {which} grid ({grid.shape[0]} rows x {grid.shape[1]} seeds) is not the plan's "
                         f"{len(plan.rows)} rows x seeds {plan.seeds[0]}-{plan.seeds[-1]}")


def demo_scores(plan: EvalPlan, before: Grid, after: Grid, judge=None,
                forget_images: np.ndarray | None = None) -> dict[str, float]:
    """Judge both grids of a plan; the keys are listed in the module docstring."""
    _check(plan, before, "before")
    _check(plan, after, "after")
    judge = judge or load_demo_judge(plan.demo)
    if plan.demo == "digits":
        return _digits_scores(plan, before, after, judge, forget_images)
    return _shapes_scores(plan, before, after, judge)


def _digits_scores(plan: EvalPlan, before: Grid, after: Grid, judge, forget_images) -> dict[str, float]:
    out: dict[str, float] = {}
    forget = [k for _, k in plan.forget]
    if not forget and forget_images is not None and len(forget_images):
        forget = [int(np.bincount(judge.predict(np.asarray(forget_images)), minlength=10).argmax())]
        out["forget_class_from_images"] = float(forget[0])
    acc = {}
    for which, grid in (("before", before), ("after", after)):
        for i in plan.rows_with("forget", "retain_in"):
            k = plan.targets[i][0]
            acc[which, k] = float((judge.predict(grid.images[i]) == k).mean())
            out[f"acc_{which}/{k}"] = acc[which, k]
    classes = sorted({k for _, k in acc})
    retained = [k for k in classes if k not in forget]
    if forget:
        out["ua"] = 1.0 - float(np.mean([acc["after", k] for k in forget]))
        out["ua_before"] = 1.0 - float(np.mean([acc["before", k] for k in forget]))
    if retained:
        rb = float(np.mean([acc["before", k] for k in retained]))
        ra = float(np.mean([acc["after", k] for k in retained]))
        drops = {k: acc["before", k] - acc["after", k] for k in retained}
        out.update({"retain_acc_before": rb, "retain_acc_after": ra, "ira_before": rb, "ira": ra,
                    "ira_rel": ra / rb if rb > 0 else float("nan"), "retain_drop_max": max(drops.values())})
        out.update({f"retain_drop/{k}": d for k, d in drops.items()})
    for i in plan.rows_with("unconditional"):
        pred_b = judge.predict(before.images[i])
        pred_a = judge.predict(after.images[i])
        nb, na = np.bincount(pred_b, minlength=10), np.bincount(pred_a, minlength=10)
        n = len(pred_b)
        for k in range(10):
            out[f"share_before/{k}"] = float(nb[k] / n)
            out[f"share_after/{k}"] = float(na[k] / n)
            out[f"pul/{k}"] = pul(int(nb[k]), int(na[k]))
        if forget:
            out["n_before"] = float(sum(nb[k] for k in forget))
            out["n_after"] = float(sum(na[k] for k in forget))
            out["pul"] = pul(int(out["n_before"]), int(out["n_after"]))
        out["unconditional_samples"] = float(n)
    return out


def pul(n_before: int, n_after: int) -> float:
    """Percentage of unlearning: 100 (n_before - n_after) / n_before; NaN when n_before is 0."""
    return 100.0 * (n_before - n_after) / n_before if n_before > 0 else float("nan")


def _shapes_scores(plan: EvalPlan, before: Grid, after: Grid, judge) -> dict[str, float]:
    from concept_eraser.demo.shapes_data import HEADS

    attrs = list(HEADS)
    forget_attrs = sorted({a for a, _ in plan.forget}, key=attrs.index)
    other_attrs = [a for a in attrs if a not in forget_attrs]
    out: dict[str, float] = {}
    for which, grid in (("before", before), ("after", after)):
        preds = [judge.predict(grid.images[i]) for i in range(len(plan.rows))]
        sfx = "" if which == "after" else "_before"
        uas = []
        for a, v in plan.forget:
            h = attrs.index(a)
            rows = [i for i in plan.rows_with("forget") if plan.targets[i][h] == v]
            miss = float(np.mean(np.concatenate([preds[i][a] != v for i in rows])))
            out[f"ua{sfx}/{HEADS[a][v]}"] = miss
            uas.append(miss)
        out[f"ua{sfx}"] = float(np.mean(uas))
        retain = plan.rows_with("retain_in", "retain_cross")
        correct = {a: np.concatenate([preds[i][a] == plan.targets[i][attrs.index(a)] for i in retain]) for a in attrs}
        for a in attrs:
            out[f"acc_{which}/{a}"] = float(correct[a].mean())
        out[f"ira{sfx}"] = float(np.mean([correct[a].mean() for a in forget_attrs]))
        out[f"cra{sfx}"] = float(np.mean([correct[a].mean() for a in other_attrs]))
    for k in ("ira", "cra"):
        out[f"{k}_rel"] = out[k] / out[f"{k}_before"] if out[f"{k}_before"] > 0 else float("nan")
    return out
