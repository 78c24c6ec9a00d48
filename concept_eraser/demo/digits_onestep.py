"""SFD stage 1 for the demo models — the teacher distilled into a one-step generator (no forgetting).

    concept-eraser demo build digits-onestep
    concept-eraser demo build shapes-onestep

Runs the SFD loop (concept_eraser.methods.sfd) from the bundled teacher over everything it draws (digits:
the ten classes; shapes: every caption of its vocabulary, methods/sfd_prompts.py) and saves the EMA
generator (unet/) and the fake score (fake_score/) in float16, with `"one_step"` and the teacher's
weights hash in concept_eraser.json (shapes: the teacher's VAE, text encoder and tokenizer beside them,
so the folder is a loadable one-step SD model). An SFD forgetting run on the teacher finds this folder
and starts stage 2 from it, so it only pays for the forgetting iterations.
Sizes: digits-onestep 2 × 1.4 MB; shapes-onestep 2 × 2.1 MB + VAE/text encoder 1.7 MB (6.0 MB).
Costs on the shared 2-core CPU: digits-onestep 100 iterations at batch 32, 733 s; shapes-onestep 200
iterations at batch 32 (lr 5e-5 / 1e-4, the sd stage-1 defaults), 666 s wall (the build's meta records it).
"""

from __future__ import annotations

import time
from pathlib import Path

from concept_eraser.resources import models_dir
from concept_eraser.spec.events import Log
from concept_eraser.spec.runloop import JobContext

SHAPES_STEPS = 200  # shapes-onestep: stage-1 iterations (300 and 400 judged no better at 30 seeds)


def build_onestep(teacher: str, out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None,
                  steps: int = 100, batch: int = 32, snapshot_every: int = 0, **config):
    """Distil the demo model `teacher` into `<teacher>-onestep`; yields Progress, returns {seconds, path, steps}.

    `snapshot_every` also writes the state after every k iterations to `<out>-step<k>` (the same folder a
    build with steps=k would write: the loop has no schedule that depends on the total)."""
    import torch

    from concept_eraser.engine.loading import load_model
    from concept_eraser.methods._shared import vocabulary_of
    from concept_eraser.methods.sfd import SFDConfig, SFDTrainer, settings_for
    from concept_eraser.methods.sfd_prompts import stage1_prompts

    ctx = ctx or JobContext()
    out_dir = Path(out_dir or models_dir() / f"{teacher}-onestep")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    bundle = load_model(teacher)
    cfg = SFDConfig(batch=batch, seed=seed, stage1=None, **config)
    s = settings_for(bundle, cfg, steps, stage1=True)
    items = (list(range(bundle.summary.num_classes)) if bundle.kind == "ddpm-cond"
             else stage1_prompts(vocabulary_of(bundle)))
    trainer = SFDTrainer(bundle, bundle.unet, s, retain=items)

    def save(folder: Path, done: int) -> None:
        from concept_eraser.engine.one_step import save_one_step

        seconds = time.perf_counter() - t0
        extra = {"teacher": teacher, "teacher_sha256": bundle.summary.sha256,
                 "sfd_stage1": {**s.__dict__, "steps": done, "items": len(items), "seconds": round(seconds, 1),
                                "weights": "float16"}}
        save_one_step(bundle, trainer.ema_generator(), folder, s.t_init, trainer.sigma_init, extra_meta=extra,
                      extra_modules={"fake_score": trainer.fake}, half=True, guidance=s.gen_guidance)

    job = trainer.train(ctx, stage="distil")
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            stats = stop.value
            break
        yield event
        done = trainer.step_done
        if snapshot_every and done % snapshot_every == 0 and done < steps and type(event).__name__ == "Progress":
            save(out_dir.with_name(f"{out_dir.name}-step{done}"), done)
    seconds = time.perf_counter() - t0
    save(out_dir, int(stats["steps"]))
    yield Log("info", f"{out_dir.name} written to {out_dir} in {seconds:.0f} s")
    return {"seconds": seconds, "path": str(out_dir), "steps": int(stats["steps"])}


def build_digits_onestep(out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None,
                         steps: int = 100, batch: int = 32, teacher: str = "digits"):
    """digits-onestep: 100 iterations at batch 32 (about 3 min on a quiet 2-core CPU)."""
    return (yield from build_onestep(teacher, out_dir, seed, ctx, steps=steps, batch=batch))


def build_shapes_onestep(out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None,
                         steps: int = SHAPES_STEPS, batch: int = 32, teacher: str = "shapes", snapshot_every: int = 0):
    """shapes-onestep: the shapes SD's 1184 vocabulary captions, teacher CFG 3.0 (its default)."""
    return (yield from build_onestep(teacher, out_dir, seed, ctx, steps=steps, batch=batch,
                                     snapshot_every=snapshot_every))
