"""SFD on the digits demo: forget 3 -> override 8, one-step sampling, judged per-class accuracy, memory.

    PYTHONPATH=. .venv/bin/python bench/sfd.py [--forget 3] [--override 8] [--per-class 100]
        [--teacher-per-class 100] [--teacher-steps 50] [--steps 150] [--teacher-cache FILE] [--out DIR]

Prints a table: per class, the share judged correct for the 50-step teacher (DDIM, its default
guidance 1.5), the stage-1 one-step model (resources/models/digits-onestep, no forgetting) and the
SFD one-step model after stage 2; for the forget class also the share judged as the override class.
Same seeds for every column (seed i of class c is the same noise in all three). Also: stage-2
seconds, stage-1 seconds (from the stage-1 folder's meta), images/s of both samplers and the
speed-up, and peak memory (max RSS from getrusage; tracemalloc's peak of Python allocations).
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def judged(bundle, judge, classes, per_class, steps=50, batch=100):
    """(per-class accuracy, per-class predictions, images/s) over seeds 0..per_class-1."""
    import numpy as np

    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking

    spec = SamplingSpec(rows=[SampleRow(label=c) for c in classes], seeds=list(range(per_class)), steps=steps,
                        scheduler="ddim", batch_size=batch)
    t0 = time.perf_counter()
    grid = run_blocking(sample_grid(bundle, spec, JobContext()))
    secs = time.perf_counter() - t0
    preds = judge.predict(grid.images.reshape(-1, *grid.images.shape[2:])).reshape(len(classes), per_class)
    acc = {c: float(np.mean(preds[i] == c)) for i, c in enumerate(classes)}
    return acc, {c: preds[i].tolist() for i, c in enumerate(classes)}, len(classes) * per_class / secs, grid


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forget", type=int, default=3)
    ap.add_argument("--override", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--teacher-per-class", type=int, default=100)
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--steps", type=int, default=40, help="stage-2 iterations")
    ap.add_argument("--teacher-cache", default=None, help="JSON file: reuse/store the teacher column")
    ap.add_argument("--teacher-only", action="store_true")
    ap.add_argument("--teacher-wait", action="store_true", help="wait for --teacher-cache to appear")
    ap.add_argument("--out", default=None, help="folder for the SFD one-step model and grids")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from concept_eraser.demo.digits_judge import load_digits_judge
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.one_step import save_one_step
    from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
    from concept_eraser.methods import get_method
    from concept_eraser.spec import JobContext, run_blocking
    from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource

    judge = load_digits_judge()
    classes = list(range(10))
    teacher = load_model("digits")

    def teacher_column():
        cache = Path(args.teacher_cache) if args.teacher_cache else None
        while args.teacher_wait and cache and not cache.is_file():  # a parallel --teacher-only run fills it
            time.sleep(10)
        if cache and cache.is_file():
            t_res = json.loads(cache.read_text())
        else:
            acc, preds, ips, _ = judged(load_model("digits"), judge, classes, args.teacher_per_class, steps=args.teacher_steps)
            t_res = {"acc": {str(k): v for k, v in acc.items()}, "preds": {str(k): v for k, v in preds.items()},
                     "images_per_s": ips, "per_class": args.teacher_per_class, "steps": args.teacher_steps}
            if cache:
                cache.write_text(json.dumps(t_res))
        return t_res

    if args.teacher_only:
        t_res = teacher_column()
        print(json.dumps({k: v for k, v in t_res.items() if k != "preds"}, indent=1))
        return 0

    stage1 = load_model("digits-onestep")
    s1_acc, s1_preds, s1_ips, s1_grid = judged(stage1, judge, classes, args.per_class, steps=1)
    s1_secs = stage1.meta.get("sfd_stage1", {}).get("seconds", float("nan"))

    # stage 2 through the method's own run (starts from digits-onestep found by 'auto')
    method = get_method("sfd")
    spec = JobSpec(model=ModelSource(path="digits"), concepts=[Concept(label=args.forget)],
                   anchor=Concept(label=args.override), method="sfd")
    cfg = method.parse_config({"steps": args.steps, "checkpoint_every": 0})
    method.check(teacher.summary, spec, cfg)
    out = Path(args.out or "/tmp/sfd-bench")
    out.mkdir(parents=True, exist_ok=True)
    run = UnlearnRun(bundle=teacher, spec=spec, ctx=JobContext(), run_dir=out / "run",
                     inputs=ForgetInputs(concepts=spec.concepts, anchor=spec.anchor, retain=[]))
    (out / "run").mkdir(exist_ok=True)
    rss0 = rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    stats = run_blocking(method.run(run, cfg))
    s2_secs = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = rss_mb()
    sfd = run.bundle  # now the one-step generator
    teacher_fresh = load_model("digits")
    save_one_step(sfd, sfd.unet, out / "digits-sfd-forget3", sfd.meta["one_step"]["t_init"],
                  sfd.meta["one_step"]["sigma_init"], extra_meta={"sfd": {"forget": args.forget,
                                                                           "override": args.override}})
    f_acc, f_preds, f_ips, grid = judged(sfd, judge, classes, args.per_class, steps=1)
    from PIL import Image

    Image.fromarray(grid.tiled()).save(out / "sfd_grid.png")

    t_res = teacher_column()  # after stage 2, so that a separate --teacher-only run can fill the cache meanwhile
    # back-to-back speed: the same 100 cells (10 classes x 10 seeds), teacher then one-step, twice each
    speeds = {"teacher": [], "one-step": []}
    for _ in range(2):
        for name, b, st in (("teacher", teacher_fresh, args.teacher_steps), ("one-step", sfd, 1)):
            speeds[name].append(judged(b, judge, classes, 10, steps=st)[2])
    t_ips, o_ips = max(speeds["teacher"]), max(speeds["one-step"])

    print(f"\nSFD digits: forget {args.forget} -> override {args.override}; judged by digits-judge; "
          f"{args.per_class} one-step samples/class, teacher {t_res['per_class']}/class at {t_res['steps']} DDIM steps")
    print(f"{'class':>5} | {'teacher':>8} | {'stage-1':>8} | {'SFD':>8}")
    for c in classes:
        t = t_res["acc"][str(c)]
        print(f"{c:>5} | {t:8.1%} | {s1_acc[c]:8.1%} | {f_acc[c]:8.1%}")
    retained = [c for c in classes if c != args.forget]
    mean = lambda d, f=lambda x: x: np.mean([f(d[c]) for c in retained])  # noqa: E731
    print(f"{'ret.':>5} | {np.mean([t_res['acc'][str(c)] for c in retained]):8.1%} | {mean(s1_acc):8.1%} | "
          f"{mean(f_acc):8.1%}   (mean over retained classes)")
    fp = np.array(f_preds[args.forget])
    tp = np.array(t_res["preds"][str(args.forget)])
    sp = np.array(s1_preds[args.forget])
    print(f"class {args.forget} prompts judged {args.override}: teacher {np.mean(tp == args.override):.1%}, "
          f"stage-1 {np.mean(sp == args.override):.1%}, SFD {np.mean(fp == args.override):.1%}; "
          f"judged {args.forget}: SFD {np.mean(fp == args.forget):.1%}")
    agree = np.mean([np.mean(np.array(f_preds[c]) == np.array(s1_preds[c])) for c in retained])
    pix = np.mean([np.abs(grid.images[c].astype(float) - s1_grid.images[c].astype(float)).mean() / 255
                   for c in retained])
    print(f"retained classes vs stage 1 (same seeds): judged label equal {agree:.1%}, mean |pixel diff| {pix:.3f} "
          f"(of the [0, 1] range)")
    print(f"min retained-class accuracy SFD: {min(f_acc[c] for c in retained):.1%}")
    print(f"sampling (back to back, 100 images, batch 100, best of 2): teacher {t_ips:.1f} images/s "
          f"({args.teacher_steps} DDIM steps, CFG 1.5), one-step {o_ips:.0f} images/s -> speed-up {o_ips / t_ips:.0f}x; "
          f"(during the accuracy runs: teacher {t_res['images_per_s']:.1f}, one-step {f_ips:.0f} images/s)")
    print(f"time: stage 1 {s1_secs:.0f} s (digits-onestep build), stage 2 {s2_secs:.0f} s ({args.steps} iterations)")
    print(f"memory: max RSS {rss0:.0f} MB before stage 2, {rss1:.0f} MB after; tracemalloc peak (Python objects) "
          f"{tm_peak / 2**20:.1f} MB")
    print(json.dumps({k: round(v, 3) for k, v in stats.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
