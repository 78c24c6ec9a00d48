"""Sampling throughput of the bundled demo models: images/second and the share of time in UNet forwards.

    .venv/bin/python bench/sampling.py [--threads N] [--steps 30] [--seeds 64]
Prints a table. Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(name: str, rows, seeds: int, steps: int, scheduler: str, batch: int):
    import torch

    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking

    bundle = load_model(name)
    spent = {"unet": 0.0}
    starts = {}

    def pre(module, args, kwargs):
        starts["t"] = time.perf_counter()

    def post(module, args, kwargs, out):
        spent["unet"] += time.perf_counter() - starts["t"]

    h1 = bundle.unet.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = bundle.unet.register_forward_hook(post, with_kwargs=True)
    spec = SamplingSpec(rows=[SampleRow.parse(r) for r in rows], seeds=list(range(seeds)), steps=steps,
                        scheduler=scheduler, batch_size=batch)
    run_blocking(sample_grid(bundle, spec.model_copy(update={"seeds": [0], "steps": 2}), JobContext()))  # warm-up
    spent["unet"] = 0.0
    t0 = time.perf_counter()
    run_blocking(sample_grid(bundle, spec, JobContext()))
    wall = time.perf_counter() - t0
    h1.remove()
    h2.remove()
    n = len(rows) * seeds
    return {"model": name, "images": n, "steps": steps, "scheduler": scheduler, "batch": batch,
            "threads": torch.get_num_threads(), "seconds": wall, "images_per_s": n / wall,
            "unet_share": spent["unet"] / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=64)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [
        ("digits", ["3"], args.seeds, "ddim", 64),
        ("digits", ["3"], args.seeds * 4, "ddim", 256),
        ("digits", ["uncond"], args.seeds, "ddim", 64),
        ("shapes", ["a red striped circle"], args.seeds, "ddim", 64),
    ]
    print(f"{'model':8} {'rows':>24} {'sched':>6} {'steps':>5} {'batch':>5} {'thr':>3} {'images':>6} "
          f"{'s':>7} {'img/s':>7} {'unet %':>6}")
    from concept_eraser.engine.catalog import demo_models

    ready = {m.name for m in demo_models() if m.available}
    for name, rows, seeds, sched, batch in cases:
        if name not in ready:
            print(f"{name}: not built (concept-eraser demo build {name}); skipped")
            continue
        r = measure(name, rows, seeds, args.steps, sched, batch)
        print(f"{name:8} {rows[0][:24]:>24} {sched:>6} {r['steps']:5d} {batch:5d} {r['threads']:3d} {r['images']:6d} "
              f"{r['seconds']:7.2f} {r['images_per_s']:7.1f} {r['unet_share'] * 100:5.1f}%")


if __name__ == "__main__":
    main()
