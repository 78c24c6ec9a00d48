"""Quality of the shapes demo model, judged by shapes-judge on fixed-seed samples.

Base prompts ("a {colour} {texture} {shape}") cover every value of every attribute; each attribute
of the prompt is judged separately. For each synonym, the base prompts that contain its base word
are re-sampled with the synonym in its place, with the same seeds, and the attribute it names is
compared with the base word's accuracy on those same prompts and seeds (the paraphrase gap).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from concept_eraser.spec.runloop import JobContext

from .shapes_data import COLOURS, HEADS, SHAPES, SYNONYMS, TEXTURES, caption

ATTRIBUTE_OF = {w: head for head, values in HEADS.items() for w in values}


def base_prompts() -> list[tuple[str, str, str]]:
    """12 (shape, colour, texture) triples: each shape and colour 3 times, each texture 4 times."""
    return [(SHAPES[i % 4], COLOURS[(i + i // 4) % 4], TEXTURES[i % 3]) for i in range(12)]


def plan(samples: int = 200, seed0: int = 0) -> dict:
    """The prompts and seeds to sample: base prompts x seeds, then synonym prompts x their seeds."""
    triples = base_prompts()
    seeds = list(range(seed0, seed0 + samples))
    jobs = []
    for word, syns in SYNONYMS.items():
        rows = [i for i, t in enumerate(triples) if word in t]
        for syn in syns:
            jobs.append((word, syn, rows, -(-samples // len(rows))))
    n_max = max(n for *_, n in jobs)
    return {"triples": triples, "seeds": seeds, "prompts": [caption(*t) for t in triples], "synonym_jobs": jobs,
            "synonym_prompts": [caption(*triples[i], words={w: s}) for w, s, rows, _ in jobs for i in rows],
            "synonym_seeds": seeds[:n_max]}


def score(p: dict, images: np.ndarray, syn_images: np.ndarray, judge, settings: str = "") -> dict:
    """Judge the sampled images (prompts, seeds, H, W, 3) of a plan; returns the table dict."""
    triples, prompts, seeds = p["triples"], p["prompts"], p["seeds"]
    preds = [judge.predict(images[i]) for i in range(len(prompts))]
    correct = {head: np.stack([preds[i][head] == HEADS[head].index(trip[h]) for i, trip in enumerate(triples)])
               for h, head in enumerate(HEADS)}  # head -> (prompts, seeds) bool
    per_attr = {head: float(c.mean()) for head, c in correct.items()}
    per_value = {head: {v: float(np.concatenate([correct[head][i] for i, t in enumerate(triples) if v in t]).mean())
                        for v in values} for head, values in HEADS.items()}
    all3 = float(np.logical_and.reduce(list(correct.values())).mean())
    per_prompt = {q: {head: float(correct[head][i].mean()) for head in HEADS} for i, q in enumerate(prompts)}
    syn_rows = {}
    k = 0
    for word, syn, rows, n in p["synonym_jobs"]:
        head = ATTRIBUTE_OF[word]
        want = HEADS[head].index(word)
        hits_syn, hits_base = [], []
        for i in rows:
            hits_syn.append(judge.predict(syn_images[k][:n])[head] == want)
            hits_base.append(correct[head][i][:n])
            k += 1
        a_syn, a_base = float(np.concatenate(hits_syn).mean()), float(np.concatenate(hits_base).mean())
        syn_rows[syn] = {"base_word": word, "attribute": head, "samples": n * len(rows), "accuracy": a_syn,
                         "base_accuracy": a_base, "gap": a_base - a_syn}
    samples = len(seeds)
    lines = [f"shapes quality: {samples} samples per base prompt x {len(prompts)} prompts "
             f"(seeds {seeds[0]}-{seeds[-1]}); {settings}",
             "attribute  judged-correct   per value"]
    for head in HEADS:
        vals = "  ".join(f"{v} {a * 100:.1f}%" for v, a in per_value[head].items())
        lines.append(f"{head:<9}  {per_attr[head] * 100:13.1f}%   {vals}")
    lines.append(f"all three  {all3 * 100:13.1f}%")
    lines.append("synonym     base word  attribute  samples  synonym   base    gap (points)")
    for syn, r in syn_rows.items():
        lines.append(f"{syn:<11} {r['base_word']:<10} {r['attribute']:<9} {r['samples']:>8}  "
                     f"{r['accuracy'] * 100:6.1f}%  {r['base_accuracy'] * 100:5.1f}%  {r['gap'] * 100:+5.1f}")
    return {"per_attribute": per_attr, "per_value": per_value, "all_three": all3, "per_prompt": per_prompt,
            "synonyms": syn_rows, "samples": samples, "settings": settings, "text": "\n".join(lines)}


def judge_table(sample: Callable[[list[str], list[int]], np.ndarray], judge, samples: int = 200, seed0: int = 0,
                settings: str = "") -> dict:
    """With any sampler: sample(prompts, seeds) -> uint8 (len(prompts), len(seeds), H, W, 3)."""
    p = plan(samples, seed0)
    return score(p, sample(p["prompts"], p["seeds"]), sample(p["synonym_prompts"], p["synonym_seeds"]), judge,
                 settings)


def shapes_quality(bundle, judge=None, samples: int = 200, ctx: JobContext | None = None, seed0: int = 0,
                   steps: int | None = None, guidance: float | None = None, scheduler: str = "ddim",
                   batch_size: int = 256):
    """Job step: samples with the engine's same-seed sampler, judges, returns score()'s table dict."""
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec.jobspec import SampleRow, SamplingSpec

    from .shapes_judge import load_shapes_judge

    ctx = ctx or JobContext()
    judge = judge or load_shapes_judge()
    s = bundle.summary
    steps = steps or s.default_steps
    guidance = s.default_guidance if guidance is None else guidance
    p = plan(samples, seed0)
    grids = []
    for prompts, seeds in ((p["prompts"], p["seeds"]), (p["synonym_prompts"], p["synonym_seeds"])):
        spec = SamplingSpec(rows=[SampleRow(prompt=q) for q in prompts], seeds=seeds, steps=steps, guidance=guidance,
                            scheduler=scheduler, batch_size=batch_size)
        grid = yield from sample_grid(bundle, spec, ctx)
        grids.append(np.asarray(grid.images))
    return score(p, grids[0], grids[1], judge, f"{scheduler} {steps} steps, guidance {guidance}")
