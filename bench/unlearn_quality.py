"""Unlearning quality of the registered methods on the demo tasks: erasure, retention, time, peak memory.

    .venv/bin/python bench/unlearn_quality.py [--methods esd-x esd-full] [--tasks digits-3 shapes-striped]
                                              [--samples 100] [--set key=value ...] [--seed 0] [--threads 1]
                                              [--out runs/bench]
Each (method, task) runs in its own process (so its peak RSS is its own) through the unlearn job with the
method's default settings (or --set overrides) at training (job) seed --seed, and the judged scores of the
demo models (metrics.judged). Prints a table.
Tasks: digits-3 (forget class 3 by label), digits-images (forget by example images of 3, unconditional
PUL; methods that take images), shapes-striped, shapes-triangle (esd-x-style concept erasure by text; a
method that needs example images, VDU, also gets 32 procedurally drawn images of the concept, other
attributes random, with the concept text as their prompt). digits-images reports PUL on the unconditional
row and the largest change in any other class's share of the unconditional samples.
--threads: torch threads per job (default 1, so runs on a loaded machine compare; the CLI uses torch's default,
every core: give 2 on this 2-core machine for the time a user's run takes). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _child import run_child  # bench/_child.py (the script's folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {
    "digits-3": {"model": "digits", "kind": "ddpm-cond", "concepts": [{"label": 3}]},
    "digits-images": {"model": "digits", "kind": "ddpm-cond", "images": 3},
    "shapes-striped": {"model": "shapes", "kind": "sd", "concepts": [{"text": "striped"}]},
    "shapes-triangle": {"model": "shapes", "kind": "sd", "concepts": [{"text": "triangle"}]},
}


def _digit_images(folder: Path, label: int, n: int = 32) -> str:
    from PIL import Image

    from concept_eraser.demo.digits_data import load_digits_tensor, to_uint8_rgb

    x, y = load_digits_tensor()
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8_rgb(x[y == label][:n])):
        Image.fromarray(img).save(folder / f"{label}_{i:03d}.png")
    return str(folder)


def _shape_images(folder: Path, word: str, n: int = 32, seed: int = 123) -> str:
    """n procedural images showing `word` (a shape or texture), the other attributes random."""
    import numpy as np
    from PIL import Image

    from concept_eraser.demo.shapes_data import COLOURS, SHAPES, TEXTURES, ShapeAttrs, draw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = [int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(len(TEXTURES)))]
        for k, vals in enumerate((SHAPES, COLOURS, TEXTURES)):
            if word in vals:
                a[k] = vals.index(word)
        Image.fromarray(draw(ShapeAttrs(*a), rng)).save(folder / f"{word}_{i:03d}.png")
    return str(folder)


def run_one(method: str, task: str, samples: int, sets: list[str], out: Path, seed: int = 0,
            threads: int = 1) -> dict:
    import resource

    import torch

    from concept_eraser.engine.unlearn_job import unlearn_job
    from concept_eraser.methods import get_method
    from concept_eraser.spec import JobContext, guarded, parse_job, run_blocking

    torch.set_num_threads(threads)
    t = TASKS[task]
    from concept_eraser.cli import parse_sets

    cfg = parse_sets(sets)
    data = {"model": {"path": t["model"]}, "method": method, "method_config": cfg, "concepts": t.get("concepts", []),
            "seed": seed}
    if "images" in t:
        data["forget_images"] = [{"path": _digit_images(out / "forget_images", t["images"])}]
    elif t["model"] == "shapes" and get_method(method).info.needs.forget_images:
        word = t["concepts"][0]["text"]
        data["forget_images"] = [{"path": _shape_images(out / f"forget_images_{word}", word)}]
    spec = parse_job(data)
    t0 = time.perf_counter()
    result = run_blocking(guarded(unlearn_job(spec, JobContext(preview_every=0), out / f"{method}_{task}",
                                              samples=samples)))
    seconds = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss = ru.ru_maxrss / 1024  # MiB (Linux reports KiB)
    cpu = ru.ru_utime + ru.ru_stime  # on a loaded machine CPU seconds (one thread) say what a quiet run takes
    if not result.ok:
        return {"method": method, "task": task, "error": result.error}
    s = result.value.scores
    return {"method": method, "task": task, "scores": {k: v for k, v in s.items() if v == v}, "seconds": seconds,
            "cpu_seconds": cpu, "train_seconds": s.get("train_seconds"), "peak_rss_mib": rss}


def fits(cls, task: str) -> bool:
    t = TASKS[task]
    if t["kind"] not in cls.info.model_kinds:
        return False
    if "images" in t:
        return cls.info.needs.forget_images or not cls.info.needs.concept
    # shapes tasks draw example images of the concept for methods that need them
    return not cls.info.needs.forget_images or cls.info.needs.concept or t["model"] == "shapes"


def fmt(r: dict) -> str:
    if "error" in r:
        return f"| {r['method']} | {r['task']} | failed: {r['error']} | | | | |"
    s = r["scores"]
    if r["task"] == "digits-images":
        # forgetting by images of 3 under ∅: the target is the unconditional samples (PUL and the other classes'
        # shares); the conditional rows' accuracy (label 3 included) is shown for information only
        f = int(s.get("forget_class_from_images", 3))
        erasure = (f"PUL {s.get('pul', float('nan')):.1f} (unconditional, judged {f}: "
                   f"{s.get('n_before', float('nan')):.0f}→{s.get('n_after', float('nan')):.0f} of "
                   f"{s.get('unconditional_samples', float('nan')):.0f})")
        moves = {k: (s[f"share_after/{k}"] - s[f"share_before/{k}"]) * 100 for k in range(10)
                 if k != f and f"share_after/{k}" in s}
        worst = max(moves, key=lambda k: abs(moves[k])) if moves else None
        retention = (f"other classes' unconditional share: worst change {moves[worst]:+.1f} pt (class {worst}); "
                     if worst is not None else "") + (
                     f"conditional rows: label-{f} accuracy {s.get(f'acc_before/{f}', 0) * 100:.0f}→"
                     f"{s.get(f'acc_after/{f}', 0) * 100:.0f}%, others' max drop "
                     f"{s.get('retain_drop_max', float('nan')) * 100:.1f} pt")
    elif r["task"].startswith("digits"):
        erasure = f"UA {s.get('ua', float('nan')) * 100:.1f}% (judged 3: {s.get('acc_after/3', float('nan')) * 100:.1f}%)"
        retention = (f"max drop {s.get('retain_drop_max', float('nan')) * 100:.1f} pt; "
                     f"IRA {s.get('ira_before', 0) * 100:.1f}→{s.get('ira', 0) * 100:.1f}%")
    else:
        erasure = f"UA {s.get('ua_before', 0) * 100:.1f}→{s.get('ua', 0) * 100:.1f}%"
        retention = (f"IRA {s.get('ira_before', 0) * 100:.1f}→{s.get('ira', 0) * 100:.1f}% (rel {s.get('ira_rel', 0):.2f}); "
                     f"CRA {s.get('cra_before', 0) * 100:.1f}→{s.get('cra', 0) * 100:.1f}% (rel {s.get('cra_rel', 0):.2f})")
    lp = s.get("ssim_distance_retain")
    extra = f"{lp:.3f}" if lp is not None else "-"
    return (f"| {r['method']} | {r['task']} | {erasure} | {retention} | {extra} | {r['train_seconds']:.0f} / "
            f"{r['seconds']:.0f} / {r.get('cpu_seconds', float('nan')):.0f} | {r['peak_rss_mib']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS))
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--seed", type=int, default=0, help="training (job) seed; the judged grid seeds stay fixed")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (the CLI uses every core)")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "TASK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args.samples, args.set, out, args.seed, args.threads)))
        return
    from concept_eraser.engine.catalog import demo_models
    from concept_eraser.methods import METHOD_CLASSES

    ready = {m.name for m in demo_models() if m.available}
    rows = []
    print(f"judged samples per row: {args.samples}; torch threads per job: {args.threads}; time = training / whole job "
          f"wall / whole job CPU (s); peak RSS of the job's process",
          file=sys.stderr)
    header = ("| method | task | erasure | retention | SSIM dist. (retain rows) | time (s) | peak RSS (MiB) |\n"
              "|---|---|---|---|---|---|---|")
    for cls in METHOD_CLASSES:
        if args.methods and cls.info.key not in args.methods:
            continue
        for task in args.tasks or list(TASKS):
            if not fits(cls, task) or TASKS[task]["model"] not in ready:
                continue
            r = run_child([__file__, "--one", cls.info.key, task, "--samples", str(args.samples), "--out", str(out),
                           "--seed", str(args.seed), "--threads", str(args.threads)]
                          + [f"--set={s}" for s in args.set], threads=args.threads, method=cls.info.key, task=task)
            rows.append(r)
            print(fmt(r) if rows[1:] else header + "\n" + fmt(r), flush=True)
    (out / "unlearn_quality.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "unlearn_quality.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
