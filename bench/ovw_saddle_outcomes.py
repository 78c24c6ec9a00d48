"""Outcomes of OVW and Saddle (default settings) on the demo models; prints tables and writes JSON.

digits: forget class 3 by label. Per-class judged accuracy (digits-judge) of class-conditioned samples before
and after, 100 fixed seeds per class (0-99), DDIM 30 steps, guidance 1.5 (the model's default).
Targets: <= 2% of class-3 samples judged 3; every other class within 2 points of the original.

shapes (OVW): forget "striped" and "triangle" (separate runs). The 12 base prompts "a {colour} {texture}
{shape}" of demo/shapes_quality.py, 100 seeds each, DDIM 25 steps, guidance 3, judged by shapes-judge.
UA = 1 - share of forget-prompt samples judged to show the concept; IRA = judged accuracy of the same
attribute on the other prompts (other textures / shapes); CRA = judged accuracy of the other two attributes
on the prompts without the concept. Targets: UA >= 90%; IRA and CRA >= 90% of the original's.

Retention stand-in for LPIPS: SSIM distance (1 - SSIM, torchmetrics, data range 1, grey/RGB at native size)
between same-seed before/after samples of the retained rows. Named as such; not LPIPS.

Usage: python bench/ovw_saddle_outcomes.py [digits-ovw] [digits-saddle] [shapes-striped] [shapes-triangle]
(default: all). Results are written to bench/results/ovw_saddle_<part>.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.engine.unlearn import ForgetInputs, UnlearnRun
from concept_eraser.methods import get_method
from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking
from concept_eraser.spec.jobspec import Concept, JobSpec, ModelSource

OUT = Path(__file__).parent / "results"
SEEDS = list(range(100))


def ssim_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean 1 - SSIM over same-seed pairs of uint8 (N, H, W, 3) images."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2).float() / 255
    return float((1 - ssim(y, x, data_range=1.0, reduction="none", kernel_size=7)).mean())


def cached(name: str, make) -> np.ndarray:
    """The original model's grid, sampled once and kept in bench/results/ (same seeds, same sampler)."""
    path = OUT / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    images = make()
    np.save(path, images)
    return images


def unlearn(bundle, name: str, key: str, concept: Concept) -> dict:
    spec = JobSpec(model=ModelSource(path=name), concepts=[concept], method=key)
    m = get_method(key)
    config = m.parse_config({})
    m.check(bundle.summary, spec, config)
    run = UnlearnRun(bundle, spec, JobContext(), Path(tempfile.mkdtemp(prefix=f"ce-{key}-")),
                     ForgetInputs(spec.concepts, None, []))
    t0 = time.perf_counter()
    logs = []
    stats = run_blocking(m.run(run, config), lambda e: logs.append(e.message) if hasattr(e, "message") else None)
    return {"seconds": time.perf_counter() - t0, "stats": stats, "log": logs}


def digits_grid(bundle):
    spec = SamplingSpec(rows=[SampleRow(label=c) for c in range(10)], seeds=SEEDS, steps=30, guidance=1.5,
                        batch_size=500)
    return np.asarray(run_blocking(sample_grid(bundle, spec, JobContext())).images)


def digits_part(key: str, cache: dict) -> dict:
    from concept_eraser.demo.digits_judge import load_digits_judge

    judge = load_digits_judge()
    bundle = load_model("digits")
    res = unlearn(bundle, "digits", key, Concept(label=3))
    after = digits_grid(bundle)
    before = cached("digits_before", lambda: digits_grid(load_model("digits")))
    acc_b = [float((judge.predict(before[c]) == c).mean()) for c in range(10)]
    acc_a = [float((judge.predict(after[c]) == c).mean()) for c in range(10)]
    judged3 = float((judge.predict(after[3]) == 3).mean())
    ssim_d = ssim_distance(np.concatenate([before[c] for c in range(10) if c != 3]),
                           np.concatenate([after[c] for c in range(10) if c != 3]))
    worst = max(abs(acc_a[c] - acc_b[c]) for c in range(10) if c != 3)
    ok = judged3 <= 0.02 and worst <= 0.02
    lines = [f"digits, {key}, forget class 3 (defaults; {res['seconds']:.0f} s; {res['log'][0] if res['log'] else ''})",
             "class      " + " ".join(f"{c:>6}" for c in range(10)),
             "before  %  " + " ".join(f"{a * 100:6.1f}" for a in acc_b),
             "after   %  " + " ".join(f"{a * 100:6.1f}" for a in acc_a),
             f"class-3 samples judged 3: {judged3 * 100:.1f}% (target <= 2%); worst retained-class change "
             f"{worst * 100:.1f} points (target <= 2); SSIM distance on retained classes {ssim_d:.4f}; "
             f"targets {'MET' if ok else 'NOT MET'}"]
    return {"part": f"digits-{key}", "before": acc_b, "after": acc_a, "judged_3": judged3, "worst_change": worst,
            "ssim_distance_retained": ssim_d, "train_seconds": res["seconds"], "stats": res["stats"],
            "targets_met": ok, "text": "\n".join(lines)}


def shapes_part(word: str, cache: dict) -> dict:
    from concept_eraser.demo.shapes_data import HEADS
    from concept_eraser.demo.shapes_judge import load_shapes_judge
    from concept_eraser.demo.shapes_quality import base_prompts

    judge = load_shapes_judge()
    bundle = load_model("shapes")
    triples = base_prompts()  # (shape, colour, texture)
    prompts = [f"a {c} {t} {s}" for s, c, t in triples]
    spec = SamplingSpec(rows=[SampleRow(prompt=p) for p in prompts], seeds=SEEDS, steps=25, guidance=3.0,
                        batch_size=300)

    def judged(images):
        preds = [judge.predict(images[i]) for i in range(len(prompts))]
        return preds

    res = unlearn(bundle, "shapes", "ovw", Concept(text=word))
    after = np.asarray(run_blocking(sample_grid(bundle, spec, JobContext())).images)
    before = cached("shapes_before", lambda: np.asarray(run_blocking(sample_grid(load_model("shapes"), spec,
                                                                                 JobContext())).images))
    head = next(h for h, vals in HEADS.items() if word in vals)
    others = [h for h in HEADS if h != head]
    idx = {"shape": 0, "colour": 1, "texture": 2}

    def scores(images):
        preds = judged(images)
        forget = [i for i, t in enumerate(triples) if word in t]
        keep = [i for i in range(len(triples)) if i not in forget]
        ua = 1 - float(np.mean([preds[i][head] == HEADS[head].index(word) for i in forget]))
        ira = float(np.mean([preds[i][head] == HEADS[head].index(triples[i][idx[head]]) for i in keep]))
        cra = float(np.mean([preds[i][h] == HEADS[h].index(triples[i][idx[h]]) for i in keep for h in others]))
        return {"UA": ua, "IRA": ira, "CRA": cra}, keep

    sb, keep = scores(before)
    sa, _ = scores(after)
    ssim_d = ssim_distance(np.concatenate([before[i] for i in keep]), np.concatenate([after[i] for i in keep]))
    ok = sa["UA"] >= 0.9 and sa["IRA"] >= 0.9 * sb["IRA"] and sa["CRA"] >= 0.9 * sb["CRA"]
    lines = [f"shapes, ovw, forget '{word}' ({head}) (defaults; {res['seconds']:.0f} s; "
             f"{res['log'][0] if res['log'] else ''})",
             f"          UA      IRA     CRA   (100 seeds x 12 prompts; {len(keep)} retain prompts)",
             f"before  {sb['UA'] * 100:5.1f}%  {sb['IRA'] * 100:5.1f}%  {sb['CRA'] * 100:5.1f}%",
             f"after   {sa['UA'] * 100:5.1f}%  {sa['IRA'] * 100:5.1f}%  {sa['CRA'] * 100:5.1f}%",
             f"targets UA >= 90%, IRA >= {0.9 * sb['IRA'] * 100:.1f}%, CRA >= {0.9 * sb['CRA'] * 100:.1f}%: "
             f"{'MET' if ok else 'NOT MET'}; SSIM distance on retain prompts {ssim_d:.4f}"]
    return {"part": f"shapes-{word}", "before": sb, "after": sa, "ssim_distance_retained": ssim_d,
            "train_seconds": res["seconds"], "stats": res["stats"], "targets_met": ok, "text": "\n".join(lines)}


def main(parts: list[str]) -> None:
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    cache: dict = {}
    for part in parts:
        kind, arg = part.split("-", 1)
        try:
            out = digits_part(arg, cache) if kind == "digits" else shapes_part(arg, cache)
        except Exception as exc:  # report and go on with the other parts
            print(f"{part} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(out["text"], flush=True)
        (OUT / f"ovw_saddle_{part}.json").write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-ovw", "shapes-striped", "shapes-triangle", "digits-saddle"])
