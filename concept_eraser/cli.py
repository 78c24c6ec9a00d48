"""concept-eraser: the headless front end. Runs the same jobs as the GUI.

Exit codes: 0 done, 1 failed, 2 invalid input, 130 cancelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from concept_eraser import __version__
from concept_eraser.spec import CancelToken, JobContext, JobResult, Progress, StageStarted, UserError, guarded
from concept_eraser.spec.events import Log

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


class ProgressBar:
    """One updating line on stderr: stage, bar, counts, scalars, ETA (plain lines when not a TTY)."""

    def __init__(self, stream=None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.stage = ""
        self.t0 = time.perf_counter()
        self.last_print = 0.0

    def start(self, stage: str) -> None:
        self.finish()
        self.stage, self.t0 = stage, time.perf_counter()

    def update(self, p: Progress) -> None:
        if p.stage != self.stage:
            self.start(p.stage)
        now = time.perf_counter()
        done = p.total is not None and p.step >= p.total
        if not done and now - self.last_print < (0.1 if self.tty else 5.0):
            return
        self.last_print = now
        elapsed = now - self.t0
        text = f"{p.stage:>8} "
        if p.total:
            frac = min(1.0, p.step / p.total)
            fill = int(frac * self.width)
            eta = elapsed / p.step * (p.total - p.step) if p.step else 0.0
            text += f"[{'#' * fill}{'.' * (self.width - fill)}] {p.step}/{p.total} {_hms(elapsed)}<{_hms(eta)}"
        else:
            text += f"{p.step} {_hms(elapsed)}"
        for k, v in p.scalars.items():
            text += f" {k}={v:.4g}"
        if self.tty:
            self.stream.write("\r" + text.ljust(100)[:150])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._open = self.tty

    def finish(self) -> None:
        if getattr(self, "_open", False):
            self.stream.write("\n")
            self._open = False


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def drive(job, cancel: CancelToken, quiet: bool = False) -> JobResult:
    """Run a job guarded, with a progress bar; the first Ctrl-C cancels, the second exits at once."""
    bar = ProgressBar()
    presses = 0

    def on_sigint(signum, frame):
        nonlocal presses
        presses += 1
        if presses == 1:
            cancel.cancel()
            sys.stderr.write("\ncancelling after the current step (Ctrl-C again to exit now)\n")
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        gen = guarded(job)
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if quiet:
                continue
            if isinstance(event, Progress):
                bar.update(event)
            elif isinstance(event, StageStarted):
                bar.start(event.stage)
            elif isinstance(event, Log):
                bar.finish()
                print(f"{event.level}: {event.message}", file=sys.stderr)
        bar.finish()
        return result
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _ctx(args) -> JobContext:
    return JobContext(cancel=CancelToken(), device=getattr(args, "device", "auto"))


def parse_seeds(items: list[str]) -> list[int]:
    """'0-7' -> 0..7; '3' -> 3; several items or commas allowed."""
    seeds: list[int] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise UserError(f"seed range {part!r} runs backwards; write it as {b}-{a}")
                seeds.extend(range(a, b + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise UserError(f"bad seed {part!r}: use numbers and ranges like 0-7")
    return seeds


# ---- commands -----------------------------------------------------------------------------------


def cmd_models(args) -> int:
    from concept_eraser.engine.catalog import demo_models

    models = demo_models()
    if args.json:
        print(json.dumps([m.__dict__ for m in models], indent=2))
        return EXIT_OK
    for m in models:
        state = "ready" if m.available else "missing (concept-eraser demo build " + m.name + ")"
        print(f"{m.name:14} {m.kind:10} {state:10}  {m.title}")
        print(f"{'':14} {m.path}")
    return EXIT_OK


def cmd_info(args) -> int:
    from concept_eraser.engine.loading import load_model

    bundle = load_model(_source(args), device="cpu")
    if args.json:
        print(json.dumps(bundle.summary.as_dict(), indent=2))
    else:
        print("\n".join(bundle.summary.lines()))
    return EXIT_OK


def _source(args):
    from concept_eraser.spec import ModelSource

    return ModelSource(path=str(args.model if hasattr(args, "model") else args.path),
                       config_dir=getattr(args, "config_dir", None))


def cmd_sample(args) -> int:
    from PIL import Image

    from concept_eraser.engine.jobs import sample_job
    from concept_eraser.spec import SampleRow, SamplingSpec

    rows = [SampleRow.parse(r) for r in (args.rows or [])] + [SampleRow(prompt=p) for p in (args.prompt or [])]
    if not rows:
        raise UserError("give grid rows: --rows 0 1 2 (class labels or 'uncond') or --prompt 'a red circle'")
    spec = SamplingSpec(rows=rows, seeds=parse_seeds(args.seeds), scheduler=args.scheduler, steps=args.steps,
                        guidance=args.guidance, height=args.size, width=args.size, batch_size=args.batch,
                        negative_prompt=args.negative or "")
    ctx = _ctx(args)
    result = drive(sample_job(_source(args), spec, ctx), ctx.cancel)
    if result.ok:
        grid = result.value
        from concept_eraser.spec.files import atomic_write

        out = Path(args.out)
        img = Image.fromarray(grid.tiled())
        if args.scale > 1:
            img = img.resize((img.width * args.scale, img.height * args.scale), Image.NEAREST)
        atomic_write(out, lambda p: img.save(p, format="PNG"))
        print(f"wrote {out} ({grid.shape[0]} rows x {grid.shape[1]} seeds)")
    return _report(result)


def cmd_demo_build(args) -> int:
    from concept_eraser.demo import DEMOS

    recipe = DEMOS[args.name]
    ctx = _ctx(args)
    kwargs = {"seed": args.seed, "ctx": ctx}
    if args.out:
        kwargs["out_dir" if recipe.kind != "judge" else "out_path"] = Path(args.out)
    result = drive(recipe.builder()(**kwargs), ctx.cancel)
    if result.ok:
        print(json.dumps(result.value, indent=2, default=str))
    return _report(result)


def cmd_demo_quality(args) -> int:
    from concept_eraser.demo.quality import quality_job

    ctx = _ctx(args)
    result = drive(quality_job(args.name, samples=args.samples, ctx=ctx), ctx.cancel)
    if result.ok:
        table = result.value
        if args.json:
            print(json.dumps(table, indent=2))
        else:
            print(table["text"])
    return _report(result)


def cmd_run_demo(args) -> int:
    """Until the wizard lands: the headless demo writes same-seed grids of the bundled models."""
    from concept_eraser.engine.catalog import demo_models

    out = Path(args.out)
    ready = {m.name for m in demo_models() if m.available}
    demos = (
        ("digits", {"rows": [str(c) for c in range(10)] + ["uncond"], "prompt": None}),
        ("shapes", {"rows": None, "prompt": ["a red striped circle", "a blue dotted square",
                                              "a green solid triangle", "a yellow striped star"]}),
    )
    rc = EXIT_OK
    for name, rows in demos:
        if name not in ready:
            print(f"skipping {name}: not built (concept-eraser demo build {name})", file=sys.stderr)
            continue
        ns = argparse.Namespace(model=name, seeds=["0-7"], scheduler="ddim", steps=30, guidance=None, size=None,
                                batch=32, negative=None, out=str(out / f"{name}.png"), scale=4, device="auto",
                                config_dir=None, **rows)
        rc = rc or cmd_sample(ns)
    return rc


def _concept(text: str):
    from concept_eraser.spec import Concept

    t = text.strip()
    return Concept(label=int(t)) if re.fullmatch(r"\d+", t) else Concept(text=t)


def _set_value(raw: str):
    """--set values: JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_sets(items: list[str]) -> dict:
    """`--set key=value` items as a method-config dict (also used by the benches)."""
    cfg = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: write it as key=value, e.g. --set lr=1e-4")
        k, v = item.split("=", 1)
        cfg[k.strip()] = _set_value(v.strip())
    return cfg


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
        data["concepts"] = [_concept(f).model_dump(mode="json") for f in args.forget]
    if args.forget_images:
        data["forget_images"] = [ForgetImage(path=p).model_dump(mode="json") for p in args.forget_images]
    if args.anchor:
        data["anchor"] = _concept(args.anchor).model_dump(mode="json")
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


def cmd_erase(args) -> int:
    from concept_eraser.engine.unlearn_job import unlearn_job

    spec, grid_seeds = erase_spec(args)
    if grid_seeds is not None:
        spec = _with_grid_seeds(spec, grid_seeds)
    ctx = JobContext(cancel=CancelToken(), device=spec.device.device)
    result = drive(unlearn_job(spec, ctx, args.out, resume=args.resume, samples=args.samples), ctx.cancel)
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
        code = _report(result)
        print(f"evaluating {result.value.run_dir}" + (" with leak tests" if args.leaks else ""))
        return code or _evaluate(None, result.value.run_dir, None, args.leaks, args.samples, None, ctx)
    return _report(result)


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

    ctx = _ctx(args)
    options = {"force": args.force, "rank": args.rank, "config_dir": args.config_dir}
    result = drive(export_job(args.run, args.format, args.out, ctx, options), ctx.cancel)
    if result.ok:
        _print_export(result.value)
    return _report(result)


def cmd_apply(args) -> int:
    from concept_eraser.engine.apply import apply_job

    ctx = _ctx(args)
    result = drive(apply_job(args.base, args.patch, args.out, ctx, scale=args.scale, force=args.force,
                             config_dir=args.config_dir), ctx.cancel)
    if result.ok:
        r = result.value
        print(f"applied {r['applied']} {r['patch']} (scale {r['scale']:g}) to {r['base']}; wrote {r['out']}")
    return _report(result)


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
    return _report(result)


def cmd_evaluate(args) -> int:
    from concept_eraser.spec import Concept, ModelSource, load_job

    spec = load_job(args.job) if args.job else None
    if args.forget:
        from concept_eraser.metrics.evaluate import resolve_edited

        base = spec or resolve_edited(args.edited)[1]
        concepts = [_concept(f) for f in args.forget]
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
        options[key.strip()] = _set_value(raw)
    if args.probe:
        options["probes"] = args.probe
    ctx = JobContext(cancel=CancelToken(), device=args.device or "auto")
    return _evaluate(args.original, args.edited, spec, args.leaks, args.samples, args.out, ctx, options)


SUMMARY_SCORES = ("ua", "ua_before", "retain_drop_max", "ira", "ira_before", "cra", "cra_before", "pul",
                  "lpips_retain", "ssim_distance_retain", "loss", "steps", "train_seconds", "seconds")


def _with_grid_seeds(spec, seeds):
    """A JobSpec whose before/after grid uses `seeds` (rows as the default grid would choose them)."""
    from concept_eraser.spec import SampleRow, SamplingSpec

    rows = [SampleRow(label=c.label) if c.label is not None else SampleRow(prompt=c.text) for c in spec.concepts]
    rows += [r for r in spec.retain if r not in rows][:4]
    if not rows:
        return spec
    return spec.model_copy(update={"sampling": SamplingSpec(rows=rows, seeds=seeds)})


def cmd_methods(args) -> int:
    from concept_eraser.methods import cards

    items = cards()
    if args.json:
        print(json.dumps([{"key": c.info.key, "title": c.info.title, "paper": c.info.paper,
                           "kinds": sorted(c.info.model_kinds), "defaults": c.defaults, "estimate": c.estimate,
                           "memory": dataclasses.asdict(c.memory)} for c in items], indent=2))
        return EXIT_OK
    for c in items:
        print(f"{c.info.key:12} {', '.join(sorted(c.info.model_kinds)):22} {c.info.title}")
        print(f"{'':12} {c.info.summary}")
        if args.verbose:
            print(f"{'':12} time: {c.estimate or 'unknown'}")
            print(f"{'':12} memory: {c.memory.text() or 'unknown'}")
            for name, prop in c.config_schema.get("properties", {}).items():
                print(f"{'':14}{name} = {c.defaults.get(name)!r}: {prop.get('description', '')}")
    return EXIT_OK


def _report(result: JobResult) -> int:
    if result.status == "finished":
        return EXIT_OK
    if result.status == "cancelled":
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"error: {result.error}", file=sys.stderr)
    if os.environ.get("CONCEPT_ERASER_DEBUG") and result.details:
        print(result.details, file=sys.stderr)
    return EXIT_INVALID if result.user_error else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="concept-eraser", description="Make a local diffusion model forget.")
    p.add_argument("--version", action="version", version=f"concept_eraser {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("models", help="list the bundled demo models")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("info", help="load a model offline and print its summary")
    s.add_argument("path", help="demo name, diffusers folder, or .safetensors/.ckpt file")
    s.add_argument("--config-dir", help="local diffusers folder with the component configs (single files)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("sample", help="same-seed grid: rows x seeds")
    s.add_argument("--model", required=True)
    s.add_argument("--config-dir")
    s.add_argument("--rows", nargs="+", help="class labels (3), 'uncond', or prompts")
    s.add_argument("--prompt", action="append", help="a text prompt row (repeatable)")
    s.add_argument("--negative", help="negative prompt (text models)")
    s.add_argument("--seeds", nargs="+", default=["0-7"], help="seeds and ranges, e.g. 0-7 or 1 5 9")
    s.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm", "euler", "dpm++"])
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--guidance", type=float, default=None, help="CFG scale; default: the model's")
    s.add_argument("--size", type=int, default=None, help="pixels; default: the model's native size")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--scale", type=int, default=1, help="upscale the PNG for viewing (nearest)")
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("methods", help="list the registered unlearning methods")
    s.add_argument("--json", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true", help="show every setting with its default")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("erase", help="make a model forget a concept (before/after grids, scores, edited model)")
    s.add_argument("--job", help="a job file (.json or .toml); flags given as well override it")
    s.add_argument("--model", help="demo name, diffusers folder, or .safetensors/.ckpt file")
    s.add_argument("--method", help="method key (concept-eraser methods)")
    s.add_argument("--forget", action="append", help="class label (3) or concept text; repeatable")
    s.add_argument("--forget-images", nargs="+", help="example images (files or folders) of what to forget")
    s.add_argument("--anchor", help="class label or text the forgotten concept should turn into")
    s.add_argument("--retain", nargs="+", help="rows that must stay: class labels, prompts, 'uncond'")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="a method setting, e.g. --set lr=1e-4")
    s.add_argument("--steps", type=int, help="optimizer steps (the method's 'steps' setting)")
    s.add_argument("--seeds", nargs="+", help="grid seeds, e.g. 0-7 (default 0-7)")
    s.add_argument("--seed", type=int, help="training seed (default 0)")
    s.add_argument("--samples", type=int, default=100,
                   help="judged samples per row for the demo models' scores (0 = none)")
    s.add_argument("--device", help="auto, cpu, cuda, mps")
    s.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   help="precision the model is loaded in (auto: bf16 or fp16 on a GPU, float32 on a CPU); the "
                        "edited model is saved in the dtype the source files store")
    s.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    s.add_argument("--out", required=True, help="run folder")
    s.add_argument("--evaluate", action="store_true", help="then write report.json/report.html into the run folder")
    s.add_argument("--leaks", action="store_true", help="with --evaluate: also run the leak tests")
    s.set_defaults(func=cmd_erase)

    s = sub.add_parser("export", help="export a run's edited model (diffusers, single file, delta, LoRA) and verify it")
    s.add_argument("run", help="run folder written by concept-eraser erase")
    s.add_argument("--format", required=True, choices=["diffusers", "single-file", "delta", "lora"])
    s.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16)")
    s.add_argument("--out", required=True, help="folder (diffusers) or .safetensors file")
    s.add_argument("--force", action="store_true", help="replace an existing --out")
    s.add_argument("--config-dir", help="diffusers folder with configs for verifying a single file")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("apply", help="apply a delta or LoRA file to a base model (writes a diffusers folder)")
    s.add_argument("base", help="demo name, diffusers folder, or .safetensors/.ckpt file")
    s.add_argument("patch", help="delta or LoRA .safetensors")
    s.add_argument("--out", required=True)
    s.add_argument("--scale", type=float, default=1.0, help="LoRA strength (0 off, 1 the exported edit)")
    s.add_argument("--force", action="store_true", help="replace an existing --out")
    s.add_argument("--config-dir", help="local diffusers folder with the component configs (single-file bases)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_apply)

    s = sub.add_parser("evaluate", help="score an edited model against its original (report.json, report.html)")
    s.add_argument("--original", help="the original model (default: the run's job.json model)")
    s.add_argument("--edited", required=True, help="a run folder (from erase) or an edited model")
    s.add_argument("--job", help="a job file saying what was erased (default: the run's job.json)")
    s.add_argument("--forget", action="append", help="what was erased (class label or text); overrides the job")
    s.add_argument("--leaks", action="store_true", help="also run the leak tests (paraphrases, attack, interference)")
    s.add_argument("--samples", type=int, default=100, help="judged samples per row (demo models)")
    s.add_argument("--probe", action="append", help="an extra paraphrase prompt (repeatable)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="leak-test option: leak_samples, attack_attempts, attack_steps, attack_k, attack_lr, "
                        "threshold, interference, steps")
    s.add_argument("--device", help="auto, cpu, cuda, mps")
    s.add_argument("--out", help="folder for report.json/report.html (default: the run folder)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("demo", help="build or measure the bundled demo models")
    dsub = s.add_subparsers(dest="demo_command", required=True)
    d = dsub.add_parser("build", help="(re)train a demo model or judge with a fixed seed")
    d.add_argument("name", choices=["digits", "digits-judge", "digits-onestep", "shapes", "shapes-onestep", "shapes-judge"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out")
    d.set_defaults(func=cmd_demo_build)
    d = dsub.add_parser("quality", help="judge a demo model's samples (the README's quality table)")
    d.add_argument("name", choices=["digits", "shapes"])
    d.add_argument("--samples", type=int, default=200, help="samples per condition")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo_quality)

    s = sub.add_parser("run-demo", help="headless demo on the bundled models (writes grids)")
    s.add_argument("--out", default="runs/demo")
    s.set_defaults(func=cmd_run_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_CANCELLED
