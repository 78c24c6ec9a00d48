"""AdvUnlearn vs ESD-x on the shapes demo: judged erasure (UA), attack success rate (ASR), IRA, CRA,
SSIM distance on the judged retain rows (LPIPS weights are not available on this machine), time; and AdvUnlearn's peak memory with one shared frozen UNet vs a
deliberate two-copy baseline.

    PYTHONPATH=. .venv/bin/python bench/advunlearn.py [--concepts striped red] [--methods advunlearn esd-x]
                 [--samples 20] [--attempts 4] [--set advunlearn:key=value ...] [--no-memory] [--out runs/bench-adv]

Each case runs in its own process (its peak RSS is its own) through the unlearn job with the method's
default settings (training seed 0 or --train-seed, judged seeds 1000..), then the same attack on the edited model:
`metrics.attack.attack_sd` (UnlearnDiffAtk-style, k=3 soft tokens, 40 Adam steps at lr 0.01) on every
forget prompt of the judged plan, `--attempts` seeds each; success = the shapes judge sees the concept.
The attack is pluggable: `--attack module:function` with attack_sd's signature.
advunlearn.json keeps each case's per-attack outcomes (`hits`, `plain_hits`; `--attempts` per prompt, in
the order of `attack_prompts`).

Memory: AdvUnlearn alone (no eval, no attack) in two modes: "shared" (the method as shipped) and
"two-copy" (a deep copy of UNet + text encoder + VAE held alive during training, as the reference code's
second full model). Reports peak RSS and the tensor bytes the training state needs, also extrapolated to
SD 1.4 sizes (UNet 859.5 M, CLIP-L text encoder 123.1 M, VAE 83.7 M parameters, float32).
Not run in CI.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from _child import run_child  # bench/_child.py (the script's folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SD14 = {"unet": 859.5e6, "text_encoder": 123.1e6, "vae": 83.7e6}


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cfg(method: str, sets: list[str]) -> dict:
    """--set items for one method, written METHOD:key=value."""
    from concept_eraser.cli import parse_sets

    return parse_sets([kv for who, _, kv in (item.partition(":") for item in sets) if who == method])


def run_case(method: str, concept: str, samples: int, attempts: int, sets: list[str], attack: str, out: Path,
             seed: int = 0) -> dict:
    import numpy as np
    import torch

    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.session import Session
    from concept_eraser.engine.unlearn_job import unlearn_job
    from concept_eraser.metrics.judged import demo_eval_plan, load_demo_judge, shapes_word
    from concept_eraser.spec import Concept, JobContext, guarded, parse_job, run_blocking

    torch.set_num_threads(1)
    spec = parse_job({"model": {"path": "shapes"}, "method": method, "method_config": _cfg(method, sets),
                      "concepts": [{"text": concept}], "seed": seed})
    bundle = load_model("shapes")
    t0 = time.perf_counter()
    result = run_blocking(guarded(unlearn_job(spec, JobContext(preview_every=0), out / f"{method}_{concept}",
                                              bundle=bundle, session=Session(bundle), samples=samples)))
    seconds = time.perf_counter() - t0
    rss = _rss_mib()
    cpu = _cpu_seconds()
    if not result.ok:
        return {"method": method, "concept": concept, "error": result.error}
    s = {k: v for k, v in result.value.scores.items() if v == v}
    # the attack: the same budget for every method, on the judged plan's forget prompts
    mod, fn = attack.split(":")
    attack_fn = getattr(importlib.import_module(mod), fn)
    original = load_model("shapes")
    judge = load_demo_judge("shapes")
    attr, word = shapes_word(concept)
    value = judge.class_names[attr].index(word)

    def judge_fn(images):
        return judge.predict(images)[attr] == value

    plan = demo_eval_plan("shapes", [Concept(text=concept)], samples=1)
    prompts = [plan.rows[i].prompt for i in plan.rows_with("forget")]
    ssim = _ssim_retain(original, bundle, concept)
    ta = time.perf_counter()
    hits, plain = [], []
    for j, prompt in enumerate(prompts):
        seeds = list(range(5000 + 100 * j, 5000 + 100 * j + attempts))
        r = attack_fn(original, bundle, prompt, None, judge_fn, seed=j, seeds=seeds)
        hits += [a["success"] for a in r.per_attempt]
        plain += [a["plain_success"] for a in r.per_attempt]
    return {"method": method, "concept": concept, "scores": s, "seconds": seconds,
            "train_seconds": s.get("train_seconds"), "job_cpu_seconds": cpu, "peak_rss_mib": rss, "asr": float(np.mean(hits)),
            "asr_plain": float(np.mean(plain)), "attempts": len(hits), "hits": [bool(h) for h in hits],
            "plain_hits": [bool(h) for h in plain], "attack_seconds": time.perf_counter() - ta,
            "attack_prompts": prompts, "ssim_distance_retain": ssim}


def _ssim_retain(original, edited, concept: str, seeds: int = 8) -> float:
    """1 - SSIM between the original's and the edited model's same-seed images of the judged plan's retain rows
    (the job reports retention only on retain rows the job itself names, and this bench names none, so that both
    methods get their default retain prompts). LPIPS needs weights this machine lacks."""
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.metrics.judged import demo_eval_plan
    from concept_eraser.metrics.ssim_distance import ssim_distance
    from concept_eraser.spec import Concept, JobContext, run_blocking

    plan = demo_eval_plan("shapes", [Concept(text=concept)], samples=seeds, seed0=3000)
    spec = plan.sampling_spec(steps=original.summary.default_steps)
    grids = [run_blocking(sample_grid(b, spec, JobContext(preview_every=0))) for b in (original, edited)]
    return float(ssim_distance(*grids, rows=plan.rows_with("retain_in")).mean)


def run_memory(mode: str, steps: int, out: Path) -> dict:
    import copy

    import torch

    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.session import Session
    from concept_eraser.engine.unlearn_job import unlearn_job
    from concept_eraser.methods.advunlearn import AdvUnlearnConfig, trained_params
    from concept_eraser.spec import JobContext, SamplingSpec, guarded, parse_job, run_blocking

    torch.set_num_threads(1)
    bundle = load_model("shapes")
    rss_loaded = _rss_mib()
    keep = None
    if mode == "two-copy":  # the reference code's second full frozen model, held for the whole run
        keep = {n: copy.deepcopy(m) for n, m in bundle.components().items()}
    spec = parse_job({"model": {"path": "shapes"}, "method": "advunlearn", "method_config": {"steps": steps},
                      "concepts": [{"text": "striped"}], "seed": 0,
                      "sampling": SamplingSpec(rows=[{"prompt": "a red striped circle"}], seeds=[0], steps=2)
                      .model_dump(mode="json")})
    result = run_blocking(guarded(unlearn_job(spec, JobContext(preview_every=0), out / f"memory_{mode}",
                                              bundle=bundle, session=Session(bundle), samples=0)))
    assert result.ok, result.error
    del keep
    counts = {n: sum(p.numel() for p in m.parameters()) for n, m in bundle.components().items()}
    trained = sum(p.numel() for p in trained_params(bundle, AdvUnlearnConfig().layers).values())  # the default part
    frac = trained / counts["text_encoder"]

    def state_bytes(c: dict, trained_n: float) -> float:  # float32 weights + (originals + grad + 2 Adam) per trained
        extra = 4 * trained_n * 4
        second = 4 * sum(c.values()) if mode == "two-copy" else 0
        return 4 * sum(c.values()) + extra + second

    sd_trained = SD14["text_encoder"] * frac
    return {"mode": mode, "peak_rss_mib": _rss_mib(), "rss_after_load_mib": rss_loaded,
            "demo_state_mib": state_bytes(counts, trained) / 2**20,
            "sd14_state_gib": state_bytes(SD14, sd_trained) / 2**30}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concepts", nargs="+", default=["striped", "red"])
    p.add_argument("--methods", nargs="+", default=["advunlearn", "esd-x"])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--attempts", type=int, default=4)
    p.add_argument("--attack", default="concept_eraser.metrics.attack:attack_sd")
    p.add_argument("--set", action="append", default=[], help="METHOD:key=value")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-steps", type=int, default=10)
    p.add_argument("--out", default="runs/bench-adv")
    p.add_argument("--train-seed", type=int, default=0, help="training seed of both methods (judged and attack "
                   "seeds stay fixed)")
    p.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--memory", help=argparse.SUPPRESS)
    a = p.parse_args()
    out = Path(a.out)
    if a.case:
        print("RESULT " + json.dumps(run_case(*a.case, a.samples, a.attempts, a.set, a.attack, out, a.train_seed)))
        return
    if a.memory:
        print("RESULT " + json.dumps(run_memory(a.memory, a.memory_steps, out)))
        return

    def sub(args: list[str]) -> dict:
        return run_child([__file__, *args, "--samples", str(a.samples), "--attempts", str(a.attempts),
                          "--attack", a.attack, "--out", str(out), "--memory-steps", str(a.memory_steps),
                          "--train-seed", str(a.train_seed)]
                         + [f"--set={s}" for s in a.set])

    rows = []
    print(f"judged samples per row: {a.samples}; attack: {a.attack}, {a.attempts} seeds x 4 forget prompts",
          file=sys.stderr)
    print("| concept | method | UA | ASR (attack) | ASR (no attack) | IRA | CRA (rel.) | SSIM dist. retain | "
          "train s | job s | job CPU s | attack s |\n|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for concept in a.concepts:
        for method in a.methods:
            r = {"method": method, "concept": concept, **sub(["--case", method, concept])}
            rows.append(r)
            if "error" in r:
                print(f"| {concept} | {method} | failed: {r['error']} |", flush=True)
                continue
            s = r["scores"]
            print(f"| {concept} | {method} | {s['ua_before'] * 100:.1f}→{s['ua'] * 100:.1f}% | {r['asr'] * 100:.1f}% | "
                  f"{r['asr_plain'] * 100:.1f}% | {s['ira_before'] * 100:.1f}→{s['ira'] * 100:.1f}% | "
                  f"{s['cra_before'] * 100:.1f}→{s['cra'] * 100:.1f}% ({s['cra_rel']:.2f}) | "
                  f"{r['ssim_distance_retain']:.3f} | {r['train_seconds']:.0f} | {r['seconds']:.0f} | "
                  f"{r['job_cpu_seconds']:.0f} | {r['attack_seconds']:.0f} |", flush=True)
    if not a.no_memory:
        print("\n| advunlearn memory | peak RSS (MiB) | RSS after load | training state, demo (MiB) | "
              "training state, SD 1.4 (GiB) |\n|---|---|---|---|---|")
        for mode in ("shared", "two-copy"):
            m = sub(["--memory", mode])
            rows.append(m)
            if "error" in m:
                print(f"| {mode} | failed: {m['error']} |")
                continue
            print(f"| {mode} | {m['peak_rss_mib']:.0f} | {m['rss_after_load_mib']:.0f} | {m['demo_state_mib']:.1f} | "
                  f"{m['sd14_state_gib']:.2f} |", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "advunlearn.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
