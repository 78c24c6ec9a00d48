"""SFD on the shapes demo (tiny SD): forget "striped" -> override "solid", one-step sampling, judged UA/IRA/CRA.

    PYTHONPATH=. .venv/bin/python bench/sfd_shapes.py [--concept striped] [--anchor solid] [--samples 100]
        [--steps 60] [--stage1 PATH] [--teacher-cache FILE] [--out DIR] [--set key=value ...]
    PYTHONPATH=. .venv/bin/python bench/sfd_shapes.py --eval-only FOLDER [--samples 30]   # judge a one-step folder

The judged plan is the unlearn job's (metrics.judged.demo_eval_plan: 4 forget rows "a {colour} striped
{shape}" + 8 retain rows with the other textures, seeds 1000...). Columns: the 25-step teacher (DDIM,
CFG 3.0), the stage-1 one-step model (resources/models/shapes-onestep, no forgetting) and the SFD
one-step model after stage 2 (run through the method itself, starting from stage 1). Every column uses
the same seeds (the one-step z is the first draw of the seed, as the teacher's initial latent). Retention
is given against the teacher and against stage 1. Also: stage-2 time (wall and CPU), stage-1 time (the
folder's meta), images/s of both samplers back to back and the speed-up, peak RSS. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def grid_of(bundle, plan, steps=25, seeds=None):
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, run_blocking

    spec = plan.sampling_spec(steps=steps)
    if seeds is not None:
        spec = spec.model_copy(update={"seeds": seeds})
    t0 = time.perf_counter()
    grid = run_blocking(sample_grid(bundle, spec, JobContext()))
    return grid, len(spec.rows) * len(spec.seeds) / (time.perf_counter() - t0)


def teacher_grid(plan, cache: Path | None):
    import numpy as np

    from concept_eraser.engine.loading import load_model
    from concept_eraser.spec.events import Grid

    key = f"{plan.forget}-{len(plan.seeds)}-{plan.seeds[0]}"
    if cache and cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return Grid(z["images"], tuple(str(x) for x in z["labels"]), tuple(int(x) for x in z["seeds"]))
    grid, _ = grid_of(load_model("shapes"), plan)
    if cache:
        with open(cache, "wb") as f:
            np.savez(f, images=grid.images, labels=np.array(grid.row_labels), seeds=np.array(grid.seeds), key=key)
    return grid


def fmt_row(name, sc, ref=None):
    rel = ""
    if ref is not None:
        rel = f" | IRA {sc['ira'] / max(ref['ira'], 1e-9):.2f}, CRA {sc['cra'] / max(ref['cra'], 1e-9):.2f}"
    return (f"| {name} | {sc['ua'] * 100:.1f}% | {sc['ira'] * 100:.1f}% | {sc['cra'] * 100:.1f}% | "
            f"{sc['acc_after/shape'] * 100:.1f} / {sc['acc_after/colour'] * 100:.1f} / "
            f"{sc['acc_after/texture'] * 100:.1f}{rel} |")


def judge_all(plan, grids: dict):
    """Scores of each grid as the 'after' of the plan (ua, ira, cra, per-attribute accuracy)."""
    from concept_eraser.metrics.judged import demo_scores

    first = next(iter(grids.values()))
    return {k: demo_scores(plan, first, g) for k, g in grids.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", default="striped")
    ap.add_argument("--anchor", default="solid")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--steps", type=int, default=None, help="stage-2 iterations (default: the method's)")
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: resources/models/shapes-onestep)")
    ap.add_argument("--teacher-cache", default=None)
    ap.add_argument("--eval-only", nargs="*", default=None, help="judge these one-step folders and stop")
    ap.add_argument("--out", default="/tmp/sfd-shapes-bench")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from concept_eraser.engine.loading import load_model
    from concept_eraser.metrics.judged import demo_eval_plan
    from concept_eraser.resources import models_dir
    from concept_eraser.spec.jobspec import Concept

    plan = demo_eval_plan("shapes", [Concept(text=args.concept)], samples=args.samples)
    cache = Path(args.teacher_cache) if args.teacher_cache else None
    header = "| model | UA | IRA | CRA | shape / colour / texture acc. (retain rows) | vs |\n|---|---|---|---|---|---|"
    teacher = teacher_grid(plan, cache)
    if args.eval_only is not None:
        grids = {"teacher (25 steps)": teacher}
        for f in args.eval_only:
            grids[Path(f).name], _ = grid_of(load_model(f), plan)
        sc = judge_all(plan, grids)
        ref = sc["teacher (25 steps)"]
        print(header)
        for k, v in sc.items():
            print(fmt_row(k, v, ref))
        return 0

    from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
    from concept_eraser.methods import get_method
    from concept_eraser.spec import JobContext, run_blocking
    from concept_eraser.spec.jobspec import JobSpec, ModelSource

    stage1_dir = Path(args.stage1) if args.stage1 else models_dir() / "shapes-onestep"
    stage1 = load_model(str(stage1_dir))
    s1_grid, _ = grid_of(stage1, plan)
    s1_secs = stage1.meta.get("sfd_stage1", {}).get("seconds", float("nan"))
    s1_steps = stage1.meta.get("sfd_stage1", {}).get("steps", "?")

    cfg = {"checkpoint_every": 0, "stage1": str(stage1_dir)}
    if args.steps is not None:
        cfg["steps"] = args.steps
    from concept_eraser.cli import parse_sets

    cfg.update(parse_sets(args.set))
    method = get_method("sfd")
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text=args.concept)],
                   anchor=Concept(text=args.anchor), method="sfd")
    config = method.parse_config(cfg)
    bundle = load_model("shapes")
    method.check(bundle.summary, spec, config)
    out = Path(args.out)
    (out / "run").mkdir(parents=True, exist_ok=True)
    run = UnlearnRun(bundle=bundle, spec=spec, ctx=JobContext(), run_dir=out / "run",
                     inputs=ForgetInputs(concepts=spec.concepts, anchor=spec.anchor, retain=[]))
    rss0, c0, t0 = rss_mb(), cpu_s(), time.perf_counter()
    stats = run_blocking(method.run(run, config))
    s2_wall, s2_cpu, rss1 = time.perf_counter() - t0, cpu_s() - c0, rss_mb()
    sfd_grid, _ = grid_of(bundle, plan)
    from PIL import Image

    Image.fromarray(sfd_grid.tiled()).save(out / "sfd_grid.png")
    Image.fromarray(s1_grid.tiled()).save(out / "stage1_grid.png")
    Image.fromarray(teacher.tiled()).save(out / "teacher_grid.png")

    sc = judge_all(plan, {"teacher": teacher, "stage1": s1_grid, "sfd": sfd_grid})
    # back-to-back speed on the same 12 rows x 10 seeds, best of 2 each
    fresh = load_model("shapes")
    seeds = list(range(10))
    speeds = {"teacher": [], "one-step": []}
    for _ in range(2):
        speeds["teacher"].append(grid_of(fresh, plan, steps=25, seeds=seeds)[1])
        speeds["one-step"].append(grid_of(bundle, plan, seeds=seeds)[1])
    t_ips, o_ips = max(speeds["teacher"]), max(speeds["one-step"])

    print(f"\nSFD shapes: forget {args.concept!r} -> override {args.anchor!r}; {plan.description}; "
          f"{args.samples} seeds per row")
    print(header)
    print(fmt_row("teacher (25 DDIM steps, CFG 3)", sc["teacher"]))
    print(fmt_row("stage 1 (one step, no forgetting)", sc["stage1"], sc["teacher"]) + " teacher")
    print(fmt_row("SFD (one step, stage 2)", sc["sfd"], sc["teacher"]) + " teacher")
    print(fmt_row("SFD (one step, stage 2)", sc["sfd"], sc["stage1"]) + " stage 1")
    print(f"time: stage 1 {s1_secs:.0f} s wall ({s1_steps} iterations, shapes-onestep build); stage 2 {s2_wall:.0f} s wall, "
          f"{s2_cpu:.0f} s CPU ({stats.get('stage2_steps', 0):.0f} iterations)")
    print(f"sampling (12 rows x 10 seeds, back to back, best of 2): teacher {t_ips:.1f} images/s (25 DDIM steps, CFG 3), "
          f"one-step {o_ips:.1f} images/s -> speed-up {o_ips / t_ips:.1f}x")
    print(f"memory: max RSS {rss0:.0f} MB before stage 2, {rss1:.0f} MB after (teacher + generator + fake score "
          f"+ VAE/text encoder)")
    print(json.dumps({k: round(v, 3) for k, v in stats.items()}))
    (out / "scores.json").write_text(json.dumps(sc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
