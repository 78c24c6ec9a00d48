"""The model and demo commands: models, info, sample, methods, demo build/quality, run-demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from concept_eraser.spec import UserError

from .common import EXIT_OK, drive, exit_code, job_context, model_source, parse_seeds


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

    bundle = load_model(model_source(args), device="cpu")
    if args.json:
        print(json.dumps(bundle.summary.as_dict(), indent=2))
    else:
        print("\n".join(bundle.summary.lines()))
    return EXIT_OK


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
    ctx = job_context(args)
    result = drive(sample_job(model_source(args), spec, ctx), ctx.cancel)
    if result.ok:
        grid = result.value
        from concept_eraser.spec.files import atomic_write

        out = Path(args.out)
        img = Image.fromarray(grid.tiled())
        if args.scale > 1:
            img = img.resize((img.width * args.scale, img.height * args.scale), Image.NEAREST)
        atomic_write(out, lambda p: img.save(p, format="PNG"))
        print(f"wrote {out} ({grid.shape[0]} rows x {grid.shape[1]} seeds)")
    return exit_code(result)


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


def cmd_demo_build(args) -> int:
    from concept_eraser.demo import DEMOS

    recipe = DEMOS[args.name]
    ctx = job_context(args)
    kwargs = {"seed": args.seed, "ctx": ctx}
    if args.out:
        kwargs["out_dir" if recipe.kind != "judge" else "out_path"] = Path(args.out)
    result = drive(recipe.builder()(**kwargs), ctx.cancel)
    if result.ok:
        print(json.dumps(result.value, indent=2, default=str))
    return exit_code(result)


def cmd_demo_quality(args) -> int:
    from concept_eraser.demo.quality import quality_job

    ctx = job_context(args)
    result = drive(quality_job(args.name, samples=args.samples, ctx=ctx), ctx.cancel)
    if result.ok:
        table = result.value
        if args.json:
            print(json.dumps(table, indent=2))
        else:
            print(table["text"])
    return exit_code(result)


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
