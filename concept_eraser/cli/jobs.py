"""The unlearning commands: erase, evaluate, export, apply."""

from __future__ import annotations

import os

from concept_eraser.spec import CancelToken, JobContext, UserError

from .common import concept, drive, exit_code, job_context, parse_seeds, parse_sets, set_value

SUMMARY_SCORES = ("ua", "ua_before", "retain_drop_max", "ira", "ira_before", "cra", "cra_before", "pul",
                  "lpips_retain", "ssim_distance_retain", "loss", "steps", "train_seconds", "seconds")


def erase_spec(args):
    """The JobSpec of `concept-eraser erase`: a job file, with any flags given on top of it."""
    from concept_eraser.spec import ForgetImage, ModelSource, SampleRow, load_job

    base = load_job(args.job) if args.job else None
    if base is None and not args.model:
        raise UserError("give --model (a demo name, folder or file) or --job FILE")
    if base is None and not args.method:
        raise UserError("give --method (see concept-eraser methods)")
    data = base.model_dump(mode="json") if base else {"model": ModelSource(path=args.model).model_dump(mode="json")}
    if args.model and base is not None:
        data["model"] = ModelSource(path=args.model).model_dump(mode="json")
    if args.method:
        data["method"] = args.method
    if args.forget:
        data["concepts"] = [concept(f).model_dump(mode="json") for f in args.forget]
    if args.forget_images:
        data["forget_images"] = [ForgetImage(path=p).model_dump(mode="json") for p in args.forget_images]
    if args.anchor:
        data["anchor"] = concept(args.anchor).model_dump(mode="json")
    if args.retain:
        data["retain"] = [SampleRow.parse(r).model_dump(mode="json") for r in args.retain]
    cfg = {**(data.get("method_config") or {}), **parse_sets(args.set or [])}
    if args.steps is not None:
        cfg["steps"] = args.steps
    data["method_config"] = cfg
    if args.seed is not None:
        data["seed"] = args.seed
    if args.device:
        data["device"] = {**(data.get("device") or {}), "device": args.device}
    if args.dtype:
        data["device"] = {**(data.get("device") or {}), "dtype": args.dtype}
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        sampling = data.get("sampling")
        if sampling:
            data["sampling"] = {**sampling, "seeds": seeds}
        else:
            data["_grid_seeds"] = seeds
    grid_seeds = data.pop("_grid_seeds", None)
    from concept_eraser.spec import parse_job

    spec = parse_job(data)
    return spec, grid_seeds


def _with_grid_seeds(spec, seeds):
    """A JobSpec whose before/after grid uses `seeds` (rows as the default grid would choose them)."""
    from concept_eraser.spec import SampleRow, SamplingSpec

    rows = [SampleRow(label=c.label) if c.label is not None else SampleRow(prompt=c.text) for c in spec.concepts]
    rows += [r for r in spec.retain if r not in rows][:4]
    if not rows:
        return spec
    return spec.model_copy(update={"sampling": SamplingSpec(rows=rows, seeds=seeds)})


def cmd_erase(args) -> int:
    from concept_eraser.engine.unlearn_job import unlearn_job

    spec, grid_seeds = erase_spec(args)
    if grid_seeds is not None:
        spec = _with_grid_seeds(spec, grid_seeds)
    from concept_eraser.engine.devices import process_rank

    ctx = JobContext(cancel=CancelToken(), device=spec.device.device)
    first = process_rank()[0] == 0  # under torchrun / accelerate launch the other processes only train
    result = drive(unlearn_job(spec, ctx, args.out, resume=args.resume, samples=args.samples), ctx.cancel,
                   quiet=not first)
    if not first:
        return exit_code(result)
    if result.ok:
        outcome = result.value
        print(f"{outcome.method} finished in {outcome.seconds:.0f} s; wrote {outcome.run_dir}")
        for name, path in outcome.outputs.items():
            print(f"  {name:10} {path}")
        main_keys = [k for k in SUMMARY_SCORES if k in outcome.scores] or list(outcome.scores)
        for k in main_keys:
            print(f"  {k:22}  {outcome.scores[k]:.4g}")
        if len(main_keys) < len(outcome.scores):
            print(f"  (all {len(outcome.scores)} scores in {outcome.outputs.get('scores')})")
    if result.ok and getattr(args, "evaluate", False):
        code = exit_code(result)
        print(f"evaluating {result.value.run_dir}" + (" with leak tests" if args.leaks else ""))
        return code or _evaluate(None, result.value.run_dir, None, args.leaks, args.samples, None, ctx)
    return exit_code(result)


def _evaluate(original, edited, spec, leaks: bool, samples: int, out, ctx, options=None) -> int:
    from concept_eraser.metrics.evaluate import evaluate_job

    result = drive(evaluate_job(original, edited, spec, ctx, leaks=leaks, samples=samples, out_dir=out,
                                options=options), ctx.cancel)
    if result.ok:
        report = result.value
        for k, v in report["scores"].items():
            if not (k.startswith(("acc_", "share_", "pul/", "retain_drop/", "dc_score"))):
                print(f"  {k:28}  {v:.4g}" if isinstance(v, float) else f"  {k:28}  {v}")
        for row in report.get("leaks", []):
            flag = "LEAK" if row["leaked"] else "ok"
            before = row.get("recognised_before")
            b = f"{before:.2f} -> " if isinstance(before, float) else ""
            print(f"  [{flag:4}] {row['test']:10} {b}{row['recognised']:.2f}  {row['probe']}")
        for name, path in result.outputs.items():
            print(f"  {name:12} {path}")
    return exit_code(result)


def cmd_evaluate(args) -> int:
    from concept_eraser.spec import Concept, ModelSource, load_job

    spec = load_job(args.job) if args.job else None
    if args.forget:
        from concept_eraser.metrics.evaluate import resolve_edited

        base = spec or resolve_edited(args.edited)[1]
        concepts = [concept(f) for f in args.forget]
        if base is None:
            from concept_eraser.spec import JobSpec

            if not args.original:
                raise UserError("give --original with --forget when the edited model is not a run folder")
            base = JobSpec(model=ModelSource(path=args.original), concepts=concepts)
        spec = base.model_copy(update={"concepts": [c if isinstance(c, Concept) else Concept(text=str(c))
                                                    for c in concepts]})
    if args.out is None and not (os.path.isdir(args.edited) and os.path.isfile(os.path.join(args.edited, "job.json"))):
        raise UserError("give --out (the edited model is not a run folder to write the report into)")
    options = {}
    for item in args.set or []:
        key, _, raw = item.partition("=")
        options[key.strip()] = set_value(raw)
    if args.probe:
        options["probes"] = args.probe
    ctx = JobContext(cancel=CancelToken(), device=args.device or "auto")
    return _evaluate(args.original, args.edited, spec, args.leaks, args.samples, args.out, ctx, options)


def _print_export(report: dict) -> None:
    v = report.get("verify", {})
    print(f"{report['format']} export: {report['out']} ({report.get('bytes', 0) / 1e6:.1f} MB)")
    if "lora" in report:
        lo = report["lora"]
        print(f"  rank {lo['rank']}: {lo['modules']} modules, energy kept {lo['energy_kept']:.2%}")
        if lo.get("layers"):
            low = min(lo["layers"], key=lambda x: x["energy_kept"])
            print(f"  lowest layer: {low['energy_kept']:.2%} ({low['kohya']}); per layer in the report")
        for note in lo.get("notes", []):
            print(f"  note: {note}")
    if "max_pixel_diff_uint8" in v:
        status = "" if "pass" not in v else (" (pass)" if v["pass"] else " (FAIL: over 1/255)")
        print(f"  verify vs {v['against']}: max pixel diff {v['max_pixel_diff_uint8']}/255{status} on "
              f"{v['cells']} cells")
    if v.get("lpips") is not None:
        print(f"  LPIPS vs full edit: {v['lpips']:.4f} (base: {v['lpips_base']:.4f})")
    elif "ssim_distance" in v:
        print(f"  LPIPS unavailable ({v.get('lpips_unavailable', '')[:80]}); SSIM distance vs full edit: "
              f"{v['ssim_distance']:.4f} (base: {v['ssim_distance_base']:.4f})")
    if "verify_file" in report:
        print(f"  report: {report['verify_file']}")


def cmd_export(args) -> int:
    from concept_eraser.engine.export import export_job

    ctx = job_context(args)
    options = {"force": args.force, "rank": args.rank, "config_dir": args.config_dir}
    result = drive(export_job(args.run, args.format, args.out, ctx, options), ctx.cancel)
    if result.ok:
        _print_export(result.value)
    return exit_code(result)


def cmd_apply(args) -> int:
    from concept_eraser.engine.apply import apply_job

    ctx = job_context(args)
    result = drive(apply_job(args.base, args.patch, args.out, ctx, scale=args.scale, force=args.force,
                             config_dir=args.config_dir), ctx.cancel)
    if result.ok:
        r = result.value
        print(f"applied {r['applied']} {r['patch']} (scale {r['scale']:g}) to {r['base']}; wrote {r['out']}")
    return exit_code(result)
