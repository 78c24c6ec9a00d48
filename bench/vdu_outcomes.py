"""VDU outcomes on the bundled demo models, judged by their classifiers. Prints tables. Not run in CI.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vdu_outcomes.py [--only digits|shapes] [--uncond 1000]
        [--seeds 25] [--config '{"gamma": 1.0}'] [--perturb 0.015] [--judge-guided 0.1,0.5 [--guided-tmin 400]]
    VDU_BENCH_DEVICE=cuda loads the models there (default cpu).

digits: forget class 3 from 32 real scikit-learn images of 3, *unconditionally* (∅ = the null class).
  Same noises before/after (seeds 0..N-1, DDIM 30 steps, unguided null class): PUL = 100·(n_before −
  n_after)/n_before for samples judged 3, and every other class's share before/after.
  Targets: PUL ≥ 90 and every other class's share within 2 points. Also prints the before → after class
  transitions of the same noises. `--perturb 0.015` instead adds Gaussian noise of that relative size (‖δ‖ =
  r·‖θ‖ per tensor, 3 draws) to the UNet: a control for how many samples any edit of that size flips.
  `--judge-guided S` is an oracle reference, not a method: the original model's null class sampled with the same noises,
  each DDIM step's x̂0 moved by S·∇ log(1 − P_judge(3 | x̂0)) (from t ≥ `--guided-tmin`), so the sampler knows
  exactly what the judge calls 3. It shows where a minimal erasure sends the former 3s under this measurement.
shapes: forget "striped" and "triangle" (separate runs) from 32 procedural images of the concept (other
  attributes random) with the concept text as their prompt. Prompts "a {colour} {texture} {shape}" over
  all 48 combinations, `--seeds` seeds each (DDIM 25 steps, guidance 3), judged by shapes-judge:
  UA  = 1 − accuracy of the concept's attribute on prompts that name the concept;
  IRA = accuracy of that attribute on prompts that name another value of it (in-domain retain);
  CRA = accuracy of the other attributes on prompts that do not name the concept (cross-domain retain).
  Targets: UA ≥ 90%, IRA and CRA ≥ 90% of the original model's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEVICE = os.environ.get("VDU_BENCH_DEVICE", "cpu")  # e.g. cuda


def _vdu_run(bundle, images, concepts, run_dir: Path, config: dict, seed: int = 0):
    from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
    from concept_eraser.methods.vdu import VDU
    from concept_eraser.spec import JobContext, run_blocking
    from concept_eraser.spec.jobspec import ForgetImage, JobSpec, ModelSource

    spec = JobSpec(model=ModelSource(path=bundle.summary.name if hasattr(bundle.summary, "name") else "demo"),
                   concepts=concepts, method="vdu", method_config=config, seed=seed,
                   forget_images=[ForgetImage(path=f"forget_{i}.png") for i in range(0 if images is None else len(images))])
    run = UnlearnRun(bundle, spec, JobContext(), run_dir, ForgetInputs(list(concepts), None, [], images=images))
    method = VDU()
    cfg = method.parse_config(config)
    t0 = time.perf_counter()
    stats = run_blocking(method.run(run, cfg))
    return stats, time.perf_counter() - t0


def _digits_judged(n: int):
    """(bundle, judged): the digits model and a function giving the judge's class of its n unconditional samples
    (seeds 0..n-1, DDIM 30 steps, unguided null class) with the bundle's current weights."""
    from concept_eraser.demo.digits_judge import load_digits_judge
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking

    bundle = load_model("digits", device=DEVICE)
    judge = load_digits_judge()
    spec = SamplingSpec(rows=[SampleRow()], seeds=list(range(n)), steps=30, scheduler="ddim", batch_size=500)

    def judged():
        return judge.predict(run_blocking(sample_grid(bundle, spec, JobContext())).images[0])

    return bundle, judged


def digits(n: int, config: dict) -> dict:
    import numpy as np

    from concept_eraser.demo.digits_data import load_digits_tensor

    bundle, judged = _digits_judged(n)
    x, y = load_digits_tensor()
    images = x[y == 3][:32] * 2 - 1
    before = judged()
    with tempfile.TemporaryDirectory() as d:
        stats, seconds = _vdu_run(bundle, images, [], Path(d), config)
    after = judged()
    sb, sa = np.bincount(before, minlength=10) / n, np.bincount(after, minlength=10) / n
    nb, na = int((before == 3).sum()), int((after == 3).sum())
    pul = 100 * (nb - na) / max(nb, 1)
    worst = max(abs(sa[c] - sb[c]) for c in range(10) if c != 3) * 100
    lines = [f"digits, unconditional (null class), forget 3 from 32 real images; {n} samples, DDIM 30 steps, "
             f"same noises; VDU {seconds:.0f} s ({int(stats['steps'])} steps)",
             f"PUL {pul:.1f}  (3s: {nb} -> {na})   worst other-class change {worst:.2f} points",
             "class   before   after   change",
             *[f"{c:>5}  {sb[c] * 100:6.1f}%  {sa[c] * 100:6.1f}%  {(sa[c] - sb[c]) * 100:+6.1f}" for c in range(10)],
             f"the samples that were 3 are now judged: {np.bincount(after[before == 3], minlength=10).tolist()}",
             "transitions (rows: before class, columns: after class):",
             *[f"{c:>5} " + " ".join(f"{v:4d}" for v in np.bincount(after[before == c], minlength=10)) for c in range(10)]]
    ok = pul >= 90 and worst <= 2.0
    return {"pul": pul, "n_before": nb, "n_after": na, "before": sb.tolist(), "after": sa.tolist(),
            "worst_other_change": worst, "seconds": seconds, "stats": stats, "ok": ok, "text": "\n".join(lines)}


def perturbed(n: int, rel: float, draws: int = 3) -> str:
    """Class changes of the unconditional digits samples under random weight perturbations of relative size `rel`
    (the size VDU's relative_drift reports): how much of a trained edit's churn any edit that large would cause."""
    import numpy as np
    import torch

    bundle, judged = _digits_judged(n)
    before = judged()
    theta = {k: p.detach().clone() for k, p in bundle.unet.named_parameters()}
    lines = [f"digits, unconditional, {n} samples: random UNet perturbations, ‖δ‖ = {rel}·‖θ‖ per tensor"]
    for s in range(draws):
        gen = torch.Generator().manual_seed(s)
        with torch.no_grad():
            for k, p in bundle.unet.named_parameters():
                d = torch.randn(p.shape, generator=gen)
                p.copy_(theta[k] + d.to(p) * (rel * theta[k].norm() / d.norm()))
        after = judged()
        change = (np.bincount(after, minlength=10) - np.bincount(before, minlength=10)) * 100 / n
        lines.append(f"draw {s}: {(after != before).sum()} of {n} samples change class; worst class change "
                     f"{np.abs(change).max():.1f} points; per class {' '.join(f'{c:+.1f}' for c in change)}")
    return "\n".join(lines)


def judge_guided(n: int, scales: list[float], t_min: int = 0) -> str:
    """Diagnostic oracle (not a method, never in the product): null-class DDIM samples of the *original* model
    steered away from what the judge itself calls 3. Each step's x̂0 (clipped) moves by S·∇ log(1 − P_judge(3 | x̂0))
    and ε is re-derived from it, so only trajectories the judge sees heading for a 3 are pushed; the same noises as
    `digits` (seeds 0..n-1, DDIM 30 steps). Prints PUL, every other class's share change, the other samples whose
    class changed, and where the former 3s went."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from concept_eraser.demo.digits_judge import load_digits_judge
    from concept_eraser.engine.sampling import make_scheduler, to_uint8

    bundle, judged = _digits_judged(n)
    judge = load_digits_judge()
    judge_net = copy.deepcopy(judge.model).to(bundle.device)  # judge.predict keeps its CPU copy
    unet, null = bundle.unet, bundle.summary.null_class
    for p in [*unet.parameters(), *judge_net.parameters()]:
        p.requires_grad_(False)
    ac = bundle.scheduler.alphas_cumprod.float().to(bundle.device)

    def sample(seeds: list[int], scale: float) -> np.ndarray:
        sched = make_scheduler("ddim", bundle.scheduler.config)
        sched.set_timesteps(30, device=bundle.device)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        x = torch.stack([torch.randn((1, 16, 16), generator=g) for g in gens]).to(bundle.device)
        x = x * sched.init_noise_sigma
        labels = torch.full((len(seeds),), null, device=bundle.device)
        for t in sched.timesteps:
            with torch.no_grad():
                eps = unet(sched.scale_model_input(x, t), t, class_labels=labels).sample
            if int(t) >= t_min:
                a = ac[int(t)]
                x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1).requires_grad_(True)
                q3 = F.softmax(judge_net((x0 + 1) / 2), -1)[:, 3]
                (g,) = torch.autograd.grad(torch.log1p(-q3.clamp(max=1 - 1e-6)).sum(), x0)
                eps = (x - a.sqrt() * (x0 + scale * g).clamp(-1, 1).detach()) / (1 - a).sqrt()
            with torch.no_grad():
                x = sched.step(eps, t, x).prev_sample
        return to_uint8(x)

    before = judged()
    sb, nb = np.bincount(before, minlength=10) * 100 / n, int((before == 3).sum())
    lines = [f"digits, unconditional, {n} samples, same noises: the original model guided away from the judge's 3 "
             f"(oracle, not a method; t >= {t_min})"]
    for scale in scales:
        after = np.concatenate([judge.predict(sample(list(range(i, min(n, i + 250))), scale))
                                for i in range(0, n, 250)])
        d = np.bincount(after, minlength=10) * 100 / n - sb
        na = int((after == 3).sum())
        lines.append(f"S {scale}: PUL {100 * (nb - na) / max(nb, 1):.1f} ({nb} -> {na}); worst other-class change "
                     f"{max(abs(d[c]) for c in range(10) if c != 3):.1f} points; per class "
                     f"{' '.join(f'{v:+.1f}' for v in d)}; other samples that changed class "
                     f"{int(((after != before) & (before != 3)).sum())}; the former 3s are now "
                     f"{np.bincount(after[before == 3], minlength=10).tolist()}")
    return "\n".join(lines)


def shapes(seeds: int, config: dict, concepts=("striped", "triangle")) -> dict:
    import numpy as np
    import torch

    from concept_eraser.demo.shapes_data import COLOURS, HEADS, SHAPES, TEXTURES, ShapeAttrs, draw
    from concept_eraser.demo.shapes_judge import load_shapes_judge
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking
    from concept_eraser.spec.jobspec import Concept

    judge = load_shapes_judge()
    triples = [(s, c, t) for s in SHAPES for c in COLOURS for t in TEXTURES]
    prompts = [f"a {c} {t} {s}" for s, c, t in triples]
    spec = SamplingSpec(rows=[SampleRow(prompt=p) for p in prompts], seeds=list(range(seeds)), steps=25,
                        guidance=3.0, scheduler="ddim", batch_size=256)

    def judged(bundle):
        images = run_blocking(sample_grid(bundle, spec, JobContext())).images
        preds = [judge.predict(images[i]) for i in range(len(prompts))]
        return {h: np.stack([preds[i][h] == HEADS[h].index(triples[i][k]) for i in range(len(prompts))])
                for k, h in enumerate(HEADS)}  # head -> (prompts, seeds) correct

    def scores(correct, concept):
        head = next(h for h, vals in HEADS.items() if concept in vals)
        k = list(HEADS).index(head)
        named = np.array([t[k] == concept for t in triples])
        ua = 1 - correct[head][named].mean()
        ira = correct[head][~named].mean()
        cra = np.mean([correct[h][~named].mean() for h in HEADS if h != head])
        return {"UA": float(ua), "IRA": float(ira), "CRA": float(cra), "n_forget": int(named.sum() * seeds),
                "n_ira": int((~named).sum() * seeds)}

    base = load_model("shapes", device=DEVICE)
    before = judged(base)
    out = {}
    lines = [f"shapes: prompts 'a {{colour}} {{texture}} {{shape}}' (48), {seeds} seeds each, DDIM 25 steps, "
             "guidance 3; judge shapes-judge",
             "concept    model      UA      IRA     CRA    IRA/orig  CRA/orig  VDU time"]
    for concept in concepts:
        bundle = load_model("shapes", device=DEVICE)
        rng = np.random.default_rng(123)
        attrs = []
        for _ in range(32):
            a = [int(rng.integers(4)), int(rng.integers(4)), int(rng.integers(3))]
            if concept in SHAPES:
                a[0] = SHAPES.index(concept)
            else:
                a[2] = TEXTURES.index(concept)
            attrs.append(ShapeAttrs(*a))
        imgs = np.stack([draw(a, rng) for a in attrs])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        with tempfile.TemporaryDirectory() as d:
            stats, seconds = _vdu_run(bundle, x, [Concept(text=concept)], Path(d), config)
        b, a = scores(before, concept), scores(judged(bundle), concept)
        rel_ira, rel_cra = a["IRA"] / max(b["IRA"], 1e-9), a["CRA"] / max(b["CRA"], 1e-9)
        ok = a["UA"] >= 0.9 and rel_ira >= 0.9 and rel_cra >= 0.9
        out[concept] = {"before": b, "after": a, "ira_rel": rel_ira, "cra_rel": rel_cra, "seconds": seconds,
                        "stats": stats, "ok": ok}
        lines.append(f"{concept:<10} original  {b['UA'] * 100:5.1f}%  {b['IRA'] * 100:5.1f}%  {b['CRA'] * 100:5.1f}%")
        lines.append(f"{'':<10} VDU       {a['UA'] * 100:5.1f}%  {a['IRA'] * 100:5.1f}%  {a['CRA'] * 100:5.1f}%  "
                     f"{rel_ira * 100:6.1f}%   {rel_cra * 100:6.1f}%   {seconds:.0f} s ({int(stats['steps'])} steps)")
        lines.append(f"{'':<10} samples: forget {a['n_forget']}, in-domain retain {a['n_ira']}")
    out["text"] = "\n".join(lines)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("digits", "shapes"))
    ap.add_argument("--uncond", type=int, default=1000, help="unconditional digits samples (same noises)")
    ap.add_argument("--seeds", type=int, default=25, help="shapes seeds per prompt")
    ap.add_argument("--config", default="{}", help="VDU config overrides (JSON); default settings otherwise")
    ap.add_argument("--concepts", default="striped,triangle")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--perturb", type=float, help="digits only: random-perturbation control of this relative size")
    ap.add_argument("--judge-guided", help="digits only: comma-separated guidance scales S of the judge-guided oracle")
    ap.add_argument("--guided-tmin", type=int, default=0, help="judge-guided oracle: guide only at t >= this")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = json.loads(args.config)
    result = {"config": config}
    if args.perturb is not None:
        print(perturbed(args.uncond, args.perturb), flush=True)
        return
    if args.judge_guided:
        scales = [float(v) for v in args.judge_guided.split(",")]
        print(judge_guided(args.uncond, scales, args.guided_tmin), flush=True)
        return
    if args.only in (None, "digits"):
        result["digits"] = digits(args.uncond, config)
        print(result["digits"]["text"], flush=True)
    if args.only in (None, "shapes"):
        result["shapes"] = shapes(args.seeds, config, tuple(args.concepts.split(",")))
        print(result["shapes"]["text"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
