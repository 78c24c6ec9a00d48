"""Cost of each metric on the bundled demo models: seconds per grid and milliseconds per image.

    .venv/bin/python bench/evaluate.py [--samples 20] [--threads 1]

Samples the evaluation plan's grid once per demo (digits: forget class 3, 11 rows; shapes: forget
"striped", 12 prompts), makes an "after" grid from it (forget rows replaced by a retain row, so the
numbers are non-trivial; for digits also the unconditional samples of the forget class), then times every metric on the pair. LPIPS uses the real AlexNet backbone
when it is installed; otherwise an AlexNet-shaped file of random tensors, for timing only (same
compute; its values are not LPIPS and are not printed). Prints a table. Not run in CI.

Leak tests (--leak-samples 8 --attack-attempts 8 --attack-steps 20; --no-leaks skips them) are timed
with the original model in both roles (the cost does not depend on the edit): the paraphrase test
(shapes: every built-in probe of "striped", sampled by both models; time per probe), and the attack
(shapes: soft prompt with k=3 tokens; digits: class embedding; time per attempt = optimisation +
two generations, adversarial and plain).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20, help="seeds per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--leak-samples", type=int, default=8, help="seeds per paraphrase probe")
    ap.add_argument("--attack-attempts", type=int, default=8)
    ap.add_argument("--attack-steps", type=int, default=20)
    ap.add_argument("--no-leaks", action="store_true")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.metrics.diffusion_classifier import diffusion_classifier
    from concept_eraser.metrics.judge_fid import images_fid, retained_fid, retained_real
    from concept_eraser.metrics.judged import demo_eval_plan, demo_scores, load_demo_judge
    from concept_eraser.metrics.lpips_retention import alexnet_weights_path, load_lpips, lpips_retention
    from concept_eraser.metrics.ssim_distance import ssim_distance
    from concept_eraser.spec import Concept, Grid, JobContext, SamplingSpec, run_blocking

    weights = alexnet_weights_path()
    real_lpips = weights.is_file()
    if not real_lpips:
        from torchvision.models import alexnet

        weights = Path(tempfile.mkdtemp()) / "alexnet-owt-7be5be79.pth"
        torch.save({k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}, weights)
    load_lpips(weights)  # model construction is not part of the per-grid time

    rows_out = []
    cases = {"digits": [Concept(label=3)], "shapes": [Concept(text="striped")]}
    for demo, concepts in cases.items():
        bundle = load_model(demo)
        plan = demo_eval_plan(demo, concepts, samples=args.samples)
        spec = SamplingSpec(rows=plan.rows, seeds=plan.seeds, steps=bundle.summary.default_steps, batch_size=256)
        before, t_sample = timed(lambda b=bundle, s=spec: run_blocking(sample_grid(b, s, JobContext())))
        n_cells = len(plan.rows) * len(plan.seeds)
        rows_out.append((demo, f"sampling the plan ({bundle.summary.default_steps} steps)", n_cells, t_sample))
        images = np.array(before.images)
        source = plan.rows_with("retain_in")[0]
        for r in plan.rows_with("forget"):
            images[r] = before.images[source]
        if demo == "digits":  # unconditional samples judged as the forget class become the retain row's
            judge0 = load_demo_judge(demo)
            for r in plan.rows_with("unconditional"):
                hit = np.flatnonzero(np.isin(judge0.predict(before.images[r]), [k for _, k in plan.forget]))
                images[r, hit] = before.images[source, hit]
        after = Grid(images, before.row_labels, before.seeds)
        retain = plan.rows_with("retain_in", "retain_cross")
        n_retain = len(retain) * len(plan.seeds)
        judge = load_demo_judge(demo)
        res, t = timed(lpips_retention, before, after, rows=retain, weights=weights)
        rows_out.append((demo, f"lpips ({res.size} px{'' if real_lpips else ', random trunk: timing only'})",
                         n_retain, t))
        res, t = timed(ssim_distance, before, after, rows=retain)
        rows_out.append((demo, f"ssim-distance ({res.size} px) = {res.mean:.4f}", n_retain, t))
        scores, t = timed(demo_scores, plan, before, after, judge)
        main_keys = [k for k in ("ua", "ira_rel", "cra_rel", "pul") if k in scores]
        rows_out.append((demo, "judged: " + ", ".join(f"{k} {scores[k]:.3g}" for k in main_keys), 2 * n_cells, t))
        fid, t = timed(retained_fid, plan, after, judge)
        rows_out.append((demo, f"judge-fid (retain rows vs real) = {fid.value:.3g}", 2 * fid.generated, t))
        base = images_fid(retained_real(plan, seed=1), retained_real(plan, seed=2), judge)
        rows_out.append((demo, f"  (judge-fid real vs real, same classes and counts = {base.value:.3g})",
                         2 * fid.generated,
                         float("nan")))
        if bundle.summary.kind == "sd":
            forget = np.concatenate([np.asarray(after.images[r]) for r in plan.rows_with("forget")])
            dc, t = timed(diffusion_classifier, bundle, forget, "striped", "solid", timesteps=10)
            rows_out.append((demo, f"diffusion-classifier (10 timesteps) = {dc.mean:+.4f}, wins {dc.win_rate:.2f}",
                             len(forget), t))
            forget_b = np.concatenate([np.asarray(before.images[r]) for r in plan.rows_with("forget")])
            dcb = diffusion_classifier(bundle, forget_b, "striped", "solid", timesteps=10)
            rows_out.append((demo, f"  (same on the original's striped samples = {dcb.mean:+.4f}, "
                                   f"wins {dcb.win_rate:.2f})", len(forget_b), float("nan")))

        if not args.no_leaks:
            rows_out += leak_rows(bundle, demo, args)

    print(f"\nmetric cost, {args.samples} seeds per row, {torch.get_num_threads()} thread(s), float32 CPU")
    print("| model | metric | images (pairs for lpips/ssim) | s per grid | ms per image |")
    print("|---|---|---|---|---|")
    for demo, what, n, t in rows_out:
        per = "" if t != t else f"{1000 * t / n:.2f}"
        sec = "" if t != t else f"{t:.2f}"
        print(f"| {demo} | {what} | {n} | {sec} | {per} |")


def leak_rows(bundle, demo: str, args) -> list[tuple[str, str, int, float]]:
    from concept_eraser.metrics.attack import attack_class, attack_sd
    from concept_eraser.metrics.recognition import recogniser

    out = []
    seeds = list(range(4000, 4000 + args.attack_attempts))
    if demo == "shapes":
        from concept_eraser.metrics.paraphrase import paraphrase_leaks

        res, t = timed(paraphrase_leaks, bundle, bundle, ["striped"], samples=args.leak_samples)
        n = len(res.probes)
        out.append((demo, f"paraphrase leaks: {n} probes x {args.leak_samples} seeds x 2 models (per probe: s / "
                          f"{n})", 2 * n * args.leak_samples, t))
        out.append((demo, "  per probe", 2 * args.leak_samples, t / n))
        judge, _ = recogniser(bundle, "striped")
        res, t = timed(attack_sd, bundle, bundle, "a red striped circle", None, judge, k=3,
                       steps=args.attack_steps, seeds=seeds)
        label = f"soft-prompt attack k=3, {args.attack_steps} Adam steps, ASR {res.asr:.2f} (unedited)"
    else:
        judge, _ = recogniser(bundle, 3)
        res, t = timed(attack_class, bundle, bundle, 3, None, judge, steps=args.attack_steps, seeds=seeds)
        label = f"class-embedding attack, {args.attack_steps} Adam steps, ASR {res.asr:.2f} (unedited)"
    out.append((demo, label + f", {len(seeds)} attempts", 3 * len(seeds), t))
    out.append((demo, "  per attempt (targets + optimisation + 2 generations)", 3, t / len(seeds)))
    return out


if __name__ == "__main__":
    main()
