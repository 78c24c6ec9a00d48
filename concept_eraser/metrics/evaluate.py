"""The evaluate job: scores (and optionally the leak tests) of an edited model against its original.

    job = evaluate_job(original, edited, spec, ctx, leaks=True, samples=100, out_dir=run_dir, options={})
    result = run_blocking(job)      # JobResult.value: the report dict (also written as report.json/.html)

`original` / `edited`: ModelSource, a path/demo name, or a loaded ModelBundle; `edited` may be a run
folder (its model/ is loaded and its job.json is the spec when none is given). Stages:
  sample     a same-seed display grid (forget rows + up to 4 retain rows x 8 seeds): retention LPIPS
             and SSIM distance per cell on the retain rows (the heat in report.html)
  judged     demo models: the judged plan (UA, IRA/CRA, PUL ...) with `samples` seeds per row;
             other SD models: the diffusion-classifier score of the forget rows, before and after
  leaks      paraphrases (text models), the adversarial attack per concept (soft prompt for SD,
             class embedding for class-conditional DDPMs), the interference matrix (more than one
             concept, or options["interference"])
Options (all optional): leak_samples (8), leak_seed0 (2000), probes (user paraphrases), threshold
(0.5), attack_attempts (8; 0 = no attack), attack_steps (40), attack_k (3), attack_lr (SD 0.01, class 0.05),
interference (bool), steps (sampling steps; default the model's), grid_seeds (list).

value["leaks"] is a list of {"test", "probe", "recognised", "recognised_before", "leaked", ...}:
paraphrase probes (leak rule in metrics.paraphrase) and one row per attack (recognised = ASR; leaked =
ASR >= 0.5, i.e. most attempts bring the concept back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from concept_eraser.spec.events import Event, GridReady, JobResult, Log, MetricReady, StageStarted
from concept_eraser.spec.jobspec import JobSpec, ModelSource, SampleRow, SamplingSpec
from concept_eraser.spec.runloop import JobContext, UserError

ATTACK_LEAK_ASR = 0.5
GRID_SEEDS = list(range(8))


def _load(src, ctx: JobContext, spec: JobSpec | None):
    from concept_eraser.engine.bundle import ModelBundle
    from concept_eraser.engine.jobs import load_job

    if isinstance(src, ModelBundle):
        return src
    if not isinstance(src, ModelSource):
        src = ModelSource(path=str(src))
    return (yield from load_job(src, ctx, spec.device if spec is not None else None))


def resolve_edited(edited) -> tuple[Any, JobSpec | None, Path | None]:
    """A run folder -> (its model/ path, its job.json spec, the run folder); a model -> (it, None, None)."""
    from concept_eraser.spec import load_job

    if isinstance(edited, str | Path) and Path(edited).is_dir() and (Path(edited) / "job.json").is_file():
        run = Path(edited)
        if not (run / "model").is_dir():
            raise UserError(f"{run} has no model/ folder: the run did not finish")
        return str(run / "model"), load_job(run / "job.json"), run
    return edited, None, None


def _retain_rows(original, spec: JobSpec, forget: list[SampleRow]) -> list[SampleRow]:
    rows = [r for r in spec.retain if r not in forget]
    if rows:
        return rows[:4]
    name = original.summary.name
    if name == "digits":
        labels = {r.label for r in forget}
        return [SampleRow(label=k) for k in range(10) if k not in labels][:4]
    if name == "shapes":
        from .judged import demo_eval_plan

        plan = demo_eval_plan("shapes", list(spec.concepts), samples=1)
        return [plan.rows[i] for i in plan.rows_with("retain_in")][:4]
    return []


def _interference_cols(original, spec: JobSpec) -> list:
    name = original.summary.name
    if name == "digits":
        return list(range(10))
    if name == "shapes":
        from concept_eraser.demo.shapes_data import HEADS

        from .judged import shapes_word

        attrs = {shapes_word(c.text)[0] for c in spec.concepts if c.text}
        return [v for a in HEADS if a in attrs for v in HEADS[a]]
    cols = [c.text for c in spec.concepts if c.text] + [r.prompt for r in spec.retain if r.prompt]
    return list(dict.fromkeys(cols))


def evaluate_job(original, edited, spec: JobSpec | None, ctx: JobContext, leaks: bool = False, samples: int = 100,
                 out_dir: str | Path | None = None, options: dict[str, Any] | None = None,
                 ) -> Generator[Event, None, JobResult]:
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.engine.unlearn_job import cached_grid, concept_rows, staged

    from .report import library_versions, write_report

    t0 = time.perf_counter()
    opts = dict(options or {})
    edited, run_spec, run_dir = resolve_edited(edited)
    spec = spec or run_spec
    if spec is None:
        raise UserError("nothing says what was erased: give a run folder (with job.json), --job, or --forget")
    if not spec.concepts:
        raise UserError("the job names no concept to evaluate (concepts given as images only are not supported yet)")
    if original is None:
        original = spec.model
    yield StageStarted("load")
    orig = yield from _load(original, ctx, spec)
    edit = yield from _load(edited, ctx, spec)
    s = orig.summary
    steps = int(opts.get("steps") or s.default_steps)
    scores: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    notes: list[str] = []

    # display grid + retention heat
    forget = concept_rows(spec)
    retain = _retain_rows(orig, spec, forget)
    seeds = list(opts.get("grid_seeds") or (spec.sampling.seeds if spec.sampling else GRID_SEEDS))
    display = SamplingSpec(rows=forget + retain, seeds=seeds, steps=steps, batch_size=256)
    before = yield from cached_grid(orig, display, ctx, "sample_before")
    yield GridReady("before", before)
    after = yield from staged(sample_grid(edit, display, ctx), "sample_after")
    yield GridReady("after", after)
    heat = heat_name = None
    retain_idx = list(range(len(forget), len(forget) + len(retain)))
    if retain_idx:
        from .retention import retention_scores

        r = retention_scores(before, after, retain_idx)
        scores.update({f"{k}_retain": v for k, v in r.scores.items()})
        yield from r.events
        for note in r.notes:
            notes.append(note)
            yield Log("warning", note)
        for key, res in r.results.items():
            if res.ok:
                descriptions[f"{key.replace('-', '_')}_retain"] = res.description
        for key in ("lpips", "ssim-distance"):
            res = r.results[key]
            if res.ok and res.per_cell is not None:
                heat, heat_name = res.per_cell, ("LPIPS" if key == "lpips" else "SSIM distance (LPIPS unavailable)")
                break

    # judged scores
    yield StageStarted("metrics")
    eval_samples = 0
    if s.name in ("digits", "shapes") and samples > 0:
        from . import METRICS
        from .judged import demo_eval_plan, demo_scores

        plan = demo_eval_plan(s.name, list(spec.concepts), samples=samples)
        espec = plan.sampling_spec(steps=steps)
        eb = yield from cached_grid(orig, espec, ctx, "sample_before")
        ea = yield from staged(sample_grid(edit, espec, ctx), "sample_after")
        judged = demo_scores(plan, eb, ea)
        scores.update(judged)
        eval_samples = samples
        descriptions["judged"] = METRICS["judged"].description + " " + plan.description
    elif s.kind == "sd":
        from .diffusion_classifier import diffusion_classifier

        anchor = spec.anchor.text if spec.anchor is not None and spec.anchor.text else ""
        for i, c in enumerate(spec.concepts):
            if c.text is None:
                continue
            for which, g in (("before", before), ("after", after)):
                dc = diffusion_classifier(orig, g.images[i], c.text, anchor)
                scores[f"dc_win_{which}/{c.text}"] = dc.win_rate
                scores[f"dc_score_{which}/{c.text}"] = dc.mean
                descriptions["diffusion-classifier"] = dc.description
    if opts.get("clip_dir"):  # CLIP zero-shot from the user's local CLIP folder (any model with text concepts)
        from .clip_zero_shot import clip_zero_shot, load_clip

        clip = load_clip(opts["clip_dir"])
        anchor = spec.anchor.text if spec.anchor is not None and spec.anchor.text else "an image"
        for i, c in enumerate(spec.concepts):
            if c.text is None:
                continue
            for which, g in (("before", before), ("after", after)):
                cz = clip_zero_shot(clip, g.images[i], c.text, [anchor])
                scores[f"clip_win_{which}/{c.text}"] = cz.win_rate
                scores[f"clip_prob_{which}/{c.text}"] = cz.mean_prob
                descriptions["clip-zero-shot"] = cz.description
    for k, v in scores.items():
        yield MetricReady(k, float(v))

    leak_rows: list[dict] = []
    report: dict[str, Any] = {}
    if leaks:
        yield StageStarted("leaks")
        leak_rows, leak_report, leak_scores = _leaks(orig, edit, spec, opts, steps, ctx)
        descriptions.update(leak_report.pop("_descriptions", {}))
        report.update(leak_report)
        scores.update(leak_scores)
        for k, v in leak_scores.items():
            yield MetricReady(k, float(v))

    report = {
        "title": f"{spec.method or 'edit'} on {s.name or s.source}: forget "
                 + ", ".join(str(c.text if c.text is not None else c.label) for c in spec.concepts),
        "models": {"original": s.source, "original_sha256": s.sha256, "edited": edit.summary.source,
                   "edited_sha256": edit.summary.sha256, "architecture": s.architecture,
                   "run_dir": str(run_dir) if run_dir else None},
        "job": json.loads(spec.model_dump_json()),
        "versions": library_versions(),
        "sampling": {"display": display.model_dump(mode="json"), "judged_samples_per_row": eval_samples,
                     "steps": steps},
        "scores": scores,
        "leaks": leak_rows,
        **report,
        "metric_descriptions": descriptions,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    outputs = {}
    target = out_dir or run_dir
    if target is not None:
        outputs = write_report(target, report, before, after, heat, heat_name)
        yield Log("info", f"wrote {outputs['report_json']} and {outputs['report_html']}")
    return JobResult("finished", value=report, metrics={k: float(v) for k, v in scores.items()}, outputs=outputs)


def _leaks(orig, edit, spec: JobSpec, opts: dict, steps: int, ctx: JobContext):
    from .attack import attack_class, attack_sd
    from .recognition import concept_name, recogniser

    rows: list[dict] = []
    out: dict[str, Any] = {}
    flat: dict[str, float] = {}
    desc: dict[str, str] = {}
    n_leak = int(opts.get("leak_samples", 8))
    s = orig.summary
    if s.conditioning == "text":
        from .paraphrase import THRESHOLD, paraphrase_leaks

        p = paraphrase_leaks(orig, edit, [c for c in spec.concepts if c.text], opts.get("probes", ()),
                             samples=n_leak, seed0=int(opts.get("leak_seed0", 2000)), steps=steps,
                             threshold=float(opts.get("threshold", THRESHOLD)), ctx=ctx)
        out["paraphrase"] = p.to_json()
        flat["paraphrase_leak_rate"] = p.leak_rate
        desc["paraphrase_leak_rate"] = p.description
        rows += [{"test": "paraphrase", "kind": r.kind, "concept": r.concept, "probe": r.probe,
                  "recognised": r.recognised, "recognised_before": r.recognised_before, "leaked": r.leaked,
                  "informative": r.informative} for r in p.probes]
    attempts = int(opts.get("attack_attempts", 8))
    a_steps = int(opts.get("attack_steps", 40))
    attacks = []
    for c in spec.concepts if attempts > 0 else []:
        judge, _ = recogniser(orig, c)
        seeds = list(range(int(opts.get("attack_seed0", 4000)), int(opts.get("attack_seed0", 4000)) + attempts))
        if s.conditioning == "text" and s.kind == "sd":
            from .interference import concept_row

            prompt = concept_row(orig, c).prompt
            res = attack_sd(orig, edit, prompt, None, judge, k=int(opts.get("attack_k", 3)), steps=a_steps,
                            lr=float(opts.get("attack_lr", 0.01)), seeds=seeds, sampling_steps=steps, ctx=ctx)
            name = f"soft-prompt attack: {prompt}"
        elif s.conditioning == "class":
            from .judged import digit_label

            label = digit_label(c) if s.name == "digits" else int(c.label)
            res = attack_class(orig, edit, label, None, judge, steps=a_steps, lr=float(opts.get("attack_lr", 0.05)),
                               seeds=seeds, sampling_steps=steps, ctx=ctx)
            name = f"class-embedding attack: class {label}"
        else:
            continue
        key = concept_name(c)
        attacks.append({"concept": key, **res.to_json()})
        flat[f"attack_asr/{key}"] = res.asr
        flat[f"attack_asr_plain/{key}"] = res.asr_plain
        desc[f"attack_asr/{key}"] = res.description
        rows.append({"test": "attack", "kind": res.settings["kind"], "concept": key, "probe": name,
                     "recognised": res.asr, "recognised_before": None, "recognised_plain": res.asr_plain,
                     "leaked": bool(res.asr >= ATTACK_LEAK_ASR), "attempts": len(res.per_attempt)})
    if attacks:
        out["attacks"] = attacks
        flat["attack_asr"] = float(np.mean([a["asr"] for a in attacks]))
    if len(spec.concepts) > 1 or opts.get("interference"):
        from .interference import interference_matrix

        cols = _interference_cols(orig, spec)
        if cols:
            name = "run: forget " + ", ".join(concept_name(c) for c in spec.concepts)
            m = interference_matrix(orig, {name: edit}, cols, samples=n_leak, steps=steps, ctx=ctx)
            out["interference"] = m.to_json()
            desc["interference"] = m.description
    out["_descriptions"] = desc
    return rows, out, flat


__all__ = ["evaluate_job", "resolve_edited"]
