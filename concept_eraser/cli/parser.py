"""The argument parser of `concept-eraser`."""

from __future__ import annotations

import argparse

from concept_eraser import __version__

from .commands import (
    cmd_demo_build,
    cmd_demo_quality,
    cmd_info,
    cmd_methods,
    cmd_models,
    cmd_run_demo,
    cmd_sample,
)
from .jobs import cmd_apply, cmd_erase, cmd_evaluate, cmd_export


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
