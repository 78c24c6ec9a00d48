"""Peak memory of each registered method on the demo models (load + method, no judged evaluation).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/method_memory.py [--methods esd-x uce]
        [--models digits shapes] [--steps 5] [--set key=value ...] [--out runs/memory]

Each (method, model) runs in its own process: import, load the demo model (the engine's loader, CPU,
float32), then the unlearn job with `samples=0` (no judged evaluation; the before/after preview grids
and the saved model are part of any real run, so they stay). Peak memory is read from the kernel's
VmHWM (peak resident set), which the bench resets (/proc/self/clear_refs "5") between phases, so each
phase's peak is its own:
  imported    RSS after importing torch and the engine (no model yet)
  loaded      RSS after the model is loaded (python + torch + the model)
  before      peak while the inputs and the before grid are made
  method      peak while the method runs (its pools, copies, optimizer states, activations)
  after       peak while the after grid is sampled and the model saved
  peak        the whole process's peak (the largest of the phases' peaks and the load's), which is what
              the machine must have free (ru_maxrss cannot be used: the reset lowers it too)
  +method     method peak − loaded: what the method adds on top of the loaded model
Trained parameters: the sum over every torch optimizer the run creates (weights, each with a gradient
and, for Adam, two moment tensors), counted by wrapping torch.optim.Optimizer.__init__.

`--steps N` overrides each trained method's step count (`steps`; SFD also `stage1_steps` when no bundled
stage-1 model is used). Peak memory does not grow with the step count (the optimizer and pools are
allocated once); `--steps 0` keeps the defaults, to check that claim. Prints a markdown table (its last
column: the peak recorded in concept_eraser/methods/memory.py, which the GUI shows; update that table when
they drift) and writes `method_memory.json` under --out. Not run in CI (about a minute per row on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _child import run_child  # bench/_child.py (the script's folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = {  # demo model -> how a job on it names what to forget
    "digits": {"kind": "ddpm-cond", "concepts": [{"label": 3}], "anchor": {"label": 8}, "image_label": 3},
    "shapes": {"kind": "sd", "concepts": [{"text": "striped"}], "anchor": {"text": "solid"},
               "image_texture": "striped"},
}
CLOSED_FORM = {"uce"}  # no step count


def _status() -> dict[str, int]:
    """VmHWM / VmRSS of this process in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _reset_peak() -> None:
    # Linux >= 4.0: writing 5 resets the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _mib(kib: int) -> float:
    return kib / 1024


def _forget_images(model: str, folder: Path, n: int = 32) -> str:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if model == "digits":
        from concept_eraser.demo.digits_data import load_digits_tensor, to_uint8_rgb

        x, y = load_digits_tensor()
        images = to_uint8_rgb(x[y == MODELS[model]["image_label"]][:n])
    else:
        from concept_eraser.demo.shapes_data import COLOURS, SHAPES, TEXTURES, ShapeAttrs, draw

        rng = np.random.default_rng(123)
        t = TEXTURES.index(MODELS[model]["image_texture"])
        images = [draw(ShapeAttrs(int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), t), rng)
                  for _ in range(n)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return str(folder)


def run_one(method: str, model: str, steps: int, sets: list[str], out: Path) -> dict:
    import resource

    import torch

    from concept_eraser.engine.jobs import load_job
    from concept_eraser.engine.unlearn_job import unlearn_job
    from concept_eraser.methods import get_method
    from concept_eraser.spec import JobContext, guarded, parse_job, run_blocking
    from concept_eraser.spec.events import GridReady, StageStarted

    torch.set_num_threads(1)
    trained: list[int] = []
    init = torch.optim.Optimizer.__init__

    def counting_init(self, params, defaults):  # records each optimizer's parameter count
        params = list(params)
        n = 0
        for p in params:
            group = p["params"] if isinstance(p, dict) else [p]
            n += sum(int(t.numel()) for t in group)
        trained.append(n)
        init(self, params, defaults)

    torch.optim.Optimizer.__init__ = counting_init

    cls = type(get_method(method))
    m = MODELS[model]
    cfg: dict = {}
    if steps > 0 and method not in CLOSED_FORM:
        cfg["steps"] = steps
        if method == "sfd":
            cfg["stage1_steps"] = steps
    from concept_eraser.cli import parse_sets

    cfg.update(parse_sets(sets))
    data: dict = {"model": {"path": model}, "method": method, "method_config": cfg}
    needs = cls.info.needs
    if needs.forget_images:
        data["forget_images"] = [{"path": _forget_images(model, out / f"forget_{model}")}]
        if model == "shapes":  # text models: the images' prompt is the concept
            data["concepts"] = m["concepts"]
    else:
        data["concepts"] = m["concepts"]
    if needs.anchor:
        data["anchor"] = m["anchor"]
    spec = parse_job(data)
    ctx = JobContext(preview_every=0)
    imported = _status()["VmRSS"]
    t0 = time.perf_counter()
    bundle = run_blocking(load_job(spec.model, ctx, spec.device))
    loaded, load_peak = _status()["VmRSS"], _status()["VmHWM"]
    params = {name: sum(p.numel() for p in mod.parameters()) for name, mod in bundle.components().items()}
    phases: dict[str, int] = {}
    _reset_peak()
    job = guarded(unlearn_job(spec, ctx, out / f"{method}_{model}", bundle=bundle, samples=0))

    state = {"phase": "before"}

    def on_event(ev) -> None:  # at each phase boundary: record the phase's own peak, reset it
        nxt = None
        if isinstance(ev, GridReady) and ev.which == "before" and state["phase"] == "before":
            nxt = "method"
        elif isinstance(ev, StageStarted) and ev.stage == "sample_after" and state["phase"] == "method":
            nxt = "after"
        if nxt:
            phases[state["phase"]] = _status()["VmHWM"]
            _reset_peak()
            state["phase"] = nxt

    result = run_blocking(job, on_event)
    phases[state["phase"]] = _status()["VmHWM"]
    seconds = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    if not result.ok:
        return {"method": method, "model": model, "error": result.error}
    return {"method": method, "model": model, "config": cfg, "steps": result.value.steps,
            "imported_mib": _mib(imported), "loaded_mib": _mib(loaded),
            **{f"{k}_mib": _mib(v) for k, v in phases.items()},
            "load_peak_mib": _mib(load_peak), "peak_mib": _mib(max(load_peak, *phases.values())), "method_over_loaded_mib": _mib(phases.get("method", 0) - loaded),
            "trained_params": trained, "model_params": params, "seconds": seconds,
            "cpu_seconds": ru.ru_utime + ru.ru_stime}


def fmt(r: dict) -> str:
    from concept_eraser.methods.memory import memory_of

    recorded = memory_of(r["method"]).demo_peak_mib.get(r["model"])  # what the Method page shows now
    rec = f"{recorded}" if recorded is not None else "-"
    if "error" in r:
        return f"| {r['method']} | {r['model']} | failed: {r['error']} | | | | | | | | | {rec} |"
    tp = sum(r["trained_params"])
    steps = r["steps"] or r["config"].get("steps", "default")  # SFD reports no step count
    return (f"| {r['method']} | {r['model']} | {steps} | {r['imported_mib']:.0f} | {r['loaded_mib']:.0f} | "
            f"{r.get('before_mib', 0):.0f} | {r.get('method_mib', 0):.0f} | {r.get('after_mib', 0):.0f} | "
            f"**{r['peak_mib']:.0f}** | {r['method_over_loaded_mib']:+.0f} | {tp / 1e6:.3f} M | {r['cpu_seconds']:.0f} | "
            f"{rec} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+")
    p.add_argument("--models", nargs="+", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=5, help="steps per trained method; 0 = the method's default")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", default="runs/memory")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args.steps, args.set, out)))
        return
    from concept_eraser.engine.catalog import demo_models
    from concept_eraser.methods import METHOD_CLASSES

    ready = {m.name for m in demo_models() if m.available}
    print(f"steps: {args.steps or 'defaults'}; MiB of resident memory (CPU, float32); phases: see the docstring",
          file=sys.stderr)
    header = ("| method | model | steps | imported | loaded | before | method | after | peak RSS | +method over loaded | "
              "trained params | CPU s | recorded peak |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for cls in METHOD_CLASSES:
        if args.methods and cls.info.key not in args.methods:
            continue
        for model in args.models or list(MODELS):
            if MODELS[model]["kind"] not in cls.info.model_kinds or model not in ready:
                continue
            r = run_child([__file__, "--one", cls.info.key, model, "--steps", str(args.steps), "--out", str(out)]
                          + [f"--set={s}" for s in args.set], method=cls.info.key, model=model)
            rows.append(r)
            print(fmt(r) if rows[1:] else header + "\n" + fmt(r), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "method_memory.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
