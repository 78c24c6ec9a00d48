"""Export a finished run in every format it supports and print the verification figures.

    python bench/export_verify.py RUN [RUN ...] [--ranks 4 16] [--out DIR]

Per format: max pixel difference of a same-seed grid against the run's model (full exports must be
<= 1/255), file size and seconds; for LoRA at each rank: the share of the difference's Frobenius
energy kept, and LPIPS against the full edit (or, without AlexNet weights, SSIM distance and max
pixel diff, named as such), next to the base model's distance to the edit for scale.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from concept_eraser.engine.export import export_job
from concept_eraser.spec import JobContext, guarded, run_blocking


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--ranks", nargs="+", type=int, default=[4, 16])
    p.add_argument("--out")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="export-bench-"))
    print("| run | format | max pixel diff | LoRA energy kept | LoRA vs edit | base vs edit | MB | s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        jobs = [("diffusers", {}), ("single-file", {}), ("delta", {})] + [("lora", {"rank": r}) for r in args.ranks]
        for fmt, opt in jobs:
            name = f"{Path(run).name}-{fmt}{opt.get('rank', '')}" + ("" if fmt == "diffusers" else ".safetensors")
            t = time.perf_counter()
            r = run_blocking(guarded(export_job(run, fmt, out / name, JobContext(), {**opt, "force": True})))
            s = time.perf_counter() - t
            if not r.ok:
                print(f"| {Path(run).name} | {fmt} | {r.error} | | | | | |")
                continue
            v = r.value["verify"]
            label = f"{fmt} r{opt['rank']}" if "rank" in opt else fmt
            kept = f"{r.value['lora']['energy_kept']:.2%}" if "lora" in r.value else ""
            if v.get("lpips") is not None:
                sim, base = f"LPIPS {v['lpips']:.4f}", f"LPIPS {v['lpips_base']:.4f}"
            elif "ssim_distance" in v:
                sim, base = f"SSIM dist {v['ssim_distance']:.4f}", f"SSIM dist {v['ssim_distance_base']:.4f}"
            else:
                sim = base = ""
            if "base_max_pixel_diff_uint8" in v:
                base += f", {v['base_max_pixel_diff_uint8']}/255"
            print(f"| {Path(run).name} | {label} | {v['max_pixel_diff_uint8']}/255 | {kept} | {sim} | {base} | "
                  f"{r.value['bytes'] / 1e6:.2f} | {s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
