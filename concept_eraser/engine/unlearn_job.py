"""The unlearn job: load -> check -> inputs -> before grid -> method -> after grid -> scores -> run folder.

run_dir/ receives job.json (the JobSpec, model sha256 filled in), before.png, after.png, scores.json,
checkpoint.pt (the trained tensors + optimizer, for --resume) and model/ (a diffusers folder of the
edited model, written beside and renamed into place). Every file is written atomically. The user's
model files are only read. A failed or cancelled run restores the loaded model (Session).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np

from concept_eraser.spec.events import (
    Event,
    Grid,
    GridReady,
    JobResult,
    Log,
    MetricReady,
    Progress,
    StageStarted,
)
from concept_eraser.spec.files import atomic_write, atomic_write_text, replace_dir
from concept_eraser.spec.jobspec import JobSpec, ModelSource, SampleRow, SamplingSpec
from concept_eraser.spec.registry import RunOutcome
from concept_eraser.spec.runloop import JobContext, UserError

from .bundle import META_FILE, ModelBundle
from .session import Session

GRID_SEEDS = 8
PREVIEW_SEEDS = 4
MAX_RETAIN_ROWS = 4


def default_sampling(bundle: ModelBundle, forget: list[SampleRow], retain: list[SampleRow],
                     seeds: list[int] | None = None) -> SamplingSpec:
    """Forget rows + (up to 4) retain rows x 8 seeds at the model's default steps and guidance."""
    rows = list(forget) + [r for r in retain if r not in forget][:MAX_RETAIN_ROWS]
    if not rows:
        rows = [SampleRow()]
    s = bundle.summary
    return SamplingSpec(rows=rows, seeds=seeds or list(range(GRID_SEEDS)), steps=s.default_steps, batch_size=64)


def concept_rows(spec: JobSpec) -> list[SampleRow]:
    return [SampleRow(label=c.label) if c.label is not None else SampleRow(prompt=c.text) for c in spec.concepts]


def staged(job: Generator[Event, None, Grid], stage: str) -> Generator[Event, None, Grid]:
    """Drive a sampling job, renaming its StageStarted/Progress to `stage` (sample_before, sample_after)."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, StageStarted):
            yield StageStarted(stage, event.total)
        elif isinstance(event, Progress):
            yield Progress(stage, event.step, event.total, event.scalars)
        else:
            yield event


def cached_grid(bundle: ModelBundle, spec: SamplingSpec, ctx: JobContext, stage: str,
                ) -> Generator[Event, None, Grid]:
    """The original model's grid for `spec`, cached per (model sha256, sampling spec, device, dtype)."""
    from .inputs import cache_dir
    from .sampling import sample_grid

    key = hashlib.sha256(json.dumps({"model": bundle.summary.sha256, "spec": spec.model_dump(mode="json"),
                                     "device": bundle.device.type, "dtype": str(bundle.dtype)},
                                    sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "grids" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return Grid(z["images"], tuple(str(x) for x in z["labels"]), tuple(int(x) for x in z["seeds"]))
        except (OSError, ValueError, KeyError):
            pass
    grid = yield from staged(sample_grid(bundle, spec, ctx), stage)

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, images=grid.images, labels=np.array(grid.row_labels), seeds=np.array(grid.seeds))

    try:
        atomic_write(path, write)
    except OSError:
        pass
    return grid


def _eval_plan(bundle: ModelBundle, spec: JobSpec, samples: int):
    """The judged evaluation plan for the bundled demo models, when the metrics API is installed."""
    demo = bundle.summary.name
    if demo not in ("digits", "shapes") or samples <= 0:
        return None, None
    try:
        from concept_eraser.metrics.judged import demo_eval_plan, demo_scores
    except ImportError:
        return None, None
    return demo_eval_plan(demo, list(spec.concepts), samples=samples), demo_scores


def save_png(grid: Grid, path: Path, scale: int = 1) -> None:
    from PIL import Image

    img = Image.fromarray(grid.tiled())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    atomic_write(path, lambda p: img.save(p, format="PNG"))


def in_stored_dtype(bundle: ModelBundle, source: ModelSource | None) -> ModelBundle:
    """The edited model in the dtype its source files store, when it was loaded in another (bf16 on a GPU).

    Tensors the run did not change are the stored ones bit for bit; a changed one is the stored tensor plus
    the edit (edited − loaded original), with the float32 value training kept for it (training.master_value)
    rather than the half-precision one, which rounds edits smaller than ~1/256 of a weight away. Saved as loaded instead, every tensor would differ from the user's
    model by rounding: a delta export would hold the whole model and a LoRA the rounding noise.
    """
    import torch

    from .loading import load_model, resolve_path, stored_dtype

    if source is None:
        return bundle
    try:
        stored = stored_dtype(resolve_path(source))
        if stored is None or stored == bundle.dtype:
            return bundle
        merged = load_model(source, device="cpu", dtype=stored)
    except UserError:
        return bundle  # the source is gone or changed: save what is loaded
    from .training import master_value

    mine = bundle.components()
    with torch.no_grad():
        for name, module in merged.components().items():
            edited = mine[name].state_dict() if name in mine else {}
            masters = {k: m for k, p in mine[name].named_parameters()
                       if (m := master_value(p)) is not None} if name in mine else {}
            for k, orig in module.state_dict().items():
                e = edited.get(k)
                if e is None or e.shape != orig.shape or not orig.is_floating_point():
                    continue
                e = e.detach().to("cpu")
                loaded = orig.to(e.dtype)  # what the run started from
                exact = masters.get(k)  # the trained float32 value, where training kept one
                if exact is None and torch.equal(e, loaded):
                    continue
                edit = (exact.to("cpu") if exact is not None else e.float()) - loaded.float()
                if edit.any():
                    orig.copy_((orig.float() + edit).to(orig.dtype))
    merged.meta = copy.deepcopy(bundle.meta)
    return merged


def write_model_files(bundle: ModelBundle, folder: Path) -> None:
    """The loaded model as a diffusers folder in `folder` (a staging folder: the callers rename it into place)."""
    from .loading import WEIGHT_SUFFIXES

    if bundle.pipe is not None and bundle.meta and bundle.meta.get("one_step"):
        from .one_step import one_step_pipeline  # SFD on SD: the generator with a one-step scheduler

        one_step_pipeline(bundle, bundle.unet).save_pretrained(folder, safe_serialization=True)
    elif bundle.pipe is not None:
        bundle.pipe.save_pretrained(folder, safe_serialization=True)
    else:  # DDPM: the source's configs as they are, the UNet's weights anew
        shutil.copytree(Path(bundle.summary.source), folder, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if n.endswith(WEIGHT_SUFFIXES)])
        bundle.unet.save_pretrained(folder / "unet", safe_serialization=True)
    if bundle.meta and not (folder / META_FILE).exists():
        atomic_write_text(folder / META_FILE, json.dumps(bundle.meta, indent=2) + "\n")


def save_model(bundle: ModelBundle, out: Path, source: ModelSource | None = None) -> Path:
    """The edited model as a diffusers folder, written to a temporary folder beside `out` and renamed; with
    `source`, in the dtype the source stores (in_stored_dtype)."""
    bundle = in_stored_dtype(bundle, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_model_files(bundle, tmp)
        return replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _uint8(images) -> np.ndarray | None:
    if images is None:
        return None
    from .sampling import to_uint8

    return to_uint8(images)


def _retention(before: Grid, after: Grid, sampling: SamplingSpec, inputs, scores: dict[str, float],
               ) -> Generator[Event, None, None]:
    """Same-seed LPIPS / SSIM distance on the display grid's retain rows (when the metrics are installed)."""
    rows = [i for i, r in enumerate(sampling.rows) if r in inputs.retain]
    if not rows:
        return
    try:
        from concept_eraser.metrics.retention import retention_scores
    except ImportError:
        return
    r = retention_scores(before, after, rows)
    scores.update({f"{k}_retain": float(v) for k, v in r.scores.items()})
    yield from r.events
    for note in r.notes:
        yield Log("warning", note)


def _check_resume(run_dir: Path, spec: JobSpec) -> None:
    old = run_dir / "job.json"
    if not old.is_file():
        raise UserError(f"nothing to resume in {run_dir}: it has no job.json")
    data = json.loads(old.read_text(encoding="utf-8"))
    for key in ("method", "method_config", "concepts", "seed"):
        mine = json.loads(spec.model_dump_json())[key]
        if data.get(key) != mine:
            raise UserError(f"{run_dir} holds a run with another {key.replace('_', ' ')}; resume with the same job "
                            f"or choose a new output folder")


def unlearn_job(spec: JobSpec, ctx: JobContext, run_dir: str | Path, resume: bool = False,
                bundle: ModelBundle | None = None, session: Session | None = None,
                samples: int = 100) -> Generator[Event, None, JobResult]:
    """Run one unlearning job end to end; JobResult.value is a RunOutcome.

    `bundle` (or `session.bundle`) reuses a loaded model; otherwise spec.model is loaded. `samples` is the
    judged evaluation's sample count per row for the demo models (0 = no judged scores).
    """
    from concept_eraser.methods import get_method

    from .inputs import resolve_inputs
    from .jobs import load_job
    from .unlearn import UnlearnRun

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if spec.method is None:
        raise UserError("the job names no method: give --method (see concept-eraser methods)")
    method = get_method(spec.method)
    config = method.parse_config(spec.method_config)
    session = session or Session()
    if bundle is not None and session.bundle is not bundle:
        session.set_bundle(bundle)
    if session.bundle is None:
        session.set_bundle((yield from load_job(spec.model, ctx, spec.device)))
    session.revert()
    bundle = session.bundle
    s = bundle.summary
    if spec.model.sha256 and spec.model.sha256 != s.sha256:
        raise UserError(f"the loaded model's sha256 {s.sha256[:12]}… is not the job's {spec.model.sha256[:12]}…")
    method.check(s, spec, config)
    if resume:
        _check_resume(run_dir, spec)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"sha256": s.sha256})})
    from .devices import process_rank

    # Under torchrun / `accelerate launch` every process trains (data parallel, engine.training); only the first
    # samples the grids, scores and writes the run.
    rank, _, world = process_rank()
    main = rank == 0
    run_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"job": str(atomic_write_text(run_dir / "job.json", spec.to_json() + "\n"))} if main else {}

    inputs = yield from resolve_inputs(bundle, spec, ctx, generate=int(getattr(config, "generate", 0) or 0))
    forget_rows = concept_rows(spec)
    if not forget_rows and inputs.image_items:
        forget_rows = [SampleRow()]
    sampling = spec.sampling or default_sampling(bundle, forget_rows, inputs.retain)
    preview_rows = (forget_rows[:1] or [SampleRow()]) + [r for r in inputs.retain if r not in forget_rows][:1]
    preview = sampling.model_copy(update={"rows": preview_rows, "seeds": sampling.seeds[:PREVIEW_SEEDS]})

    plan, scorer = _eval_plan(bundle, spec, samples) if main else (None, None)
    before = (yield from cached_grid(bundle, sampling, ctx, "sample_before")) if main else None
    if before is not None:
        yield GridReady("before", before)
    eval_spec = eval_before = None
    if plan is not None:
        eval_spec = plan.sampling_spec(steps=s.default_steps)
        eval_before = yield from cached_grid(bundle, eval_spec, ctx, "sample_before")

    session.begin(method.info.edits)
    try:
        run = UnlearnRun(bundle=bundle, spec=spec, ctx=ctx, run_dir=run_dir, inputs=inputs, resume=resume,
                         preview_spec=preview)
        t_train = time.perf_counter()
        stats = yield from method.run(run, config)
        train_seconds = time.perf_counter() - t_train
        if not main:
            session.finish(str(run_dir))
            yield Log("info", f"process {rank} of {world}: training done; process 0 writes {run_dir}")
            scores = {k: float(v) for k, v in (stats or {}).items()}
            outcome = RunOutcome(run_dir=str(run_dir), method=spec.method, scores=scores,
                                 steps=int(scores.get("steps", 0)), seconds=round(time.perf_counter() - t0, 2))
            return JobResult("finished", value=outcome, metrics=scores)
        from .sampling import sample_grid

        after = yield from staged(sample_grid(bundle, sampling, ctx), "sample_after")
        yield GridReady("after", after)
        eval_after = None
        if eval_spec is not None:
            eval_after = yield from staged(sample_grid(bundle, eval_spec, ctx), "sample_after")
        yield StageStarted("metrics")
        scores: dict[str, float] = {k: float(v) for k, v in (stats or {}).items()}
        scores["train_seconds"] = round(train_seconds, 2)
        for k, v in scores.items():
            yield MetricReady(k, v)
        if eval_after is not None:
            judged = scorer(plan, eval_before, eval_after, forget_images=_uint8(inputs.images))
            for k, v in judged.items():
                scores[k] = float(v)
                yield MetricReady(k, float(v))
        yield from _retention(before, after, sampling, inputs, scores)
        yield StageStarted("export")
        outputs["model"] = str(save_model(bundle, run_dir / "model", spec.model))
    except BaseException:
        session.fail()
        raise
    session.finish(str(run_dir))
    save_png(before, run_dir / "before.png")
    save_png(after, run_dir / "after.png")
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    clean = {k: (None if v != v else v) for k, v in scores.items()}  # NaN -> null: valid JSON
    report = {"method": spec.method, "model_sha256": s.sha256, "scores": clean,
              "sampling": sampling.model_dump(mode="json"), "eval_samples": samples if plan is not None else 0}
    outputs["scores"] = str(atomic_write_text(run_dir / "scores.json", json.dumps(report, indent=2) + "\n"))
    outputs["before"] = str(run_dir / "before.png")
    outputs["after"] = str(run_dir / "after.png")
    if (run_dir / "checkpoint.pt").is_file():
        outputs["checkpoint"] = str(run_dir / "checkpoint.pt")
    yield Log("info", f"wrote {run_dir}")
    outcome = RunOutcome(run_dir=str(run_dir), method=spec.method, scores=scores, before=before, after=after,
                         steps=int(scores.get("steps", 0)), seconds=scores["seconds"], outputs=outputs)
    return JobResult("finished", value=outcome, metrics=scores, outputs=outputs)
