"""digits-onestep: SFD stage 1 — the digits DDPM distilled into a one-step generator (no forgetting).

    concept-eraser demo build digits-onestep

Runs the SFD loop (concept_eraser.methods.sfd) over all ten classes from the bundled digits teacher and
saves the EMA generator (unet/) and the fake score (fake_score/) in float16 (2 × 1.4 MB), with
`"one_step"` and the teacher's weights hash in concept_eraser.json. An SFD forgetting run on the digits
model finds this folder and starts stage 2 from it, so it only pays for the forgetting iterations.
"""

from __future__ import annotations

import time
from pathlib import Path

from concept_eraser.resources import models_dir
from concept_eraser.spec.events import Log
from concept_eraser.spec.runloop import JobContext


def build_digits_onestep(out_dir: Path | None = None, seed: int = 0, ctx: JobContext | None = None,
                         steps: int = 100, batch: int = 32, teacher: str = "digits"):
    """Distil the digits teacher; yields Progress, returns {seconds, path, steps}."""
    import torch

    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.one_step import save_one_step
    from concept_eraser.methods.sfd import SFDConfig, SFDTrainer, settings_for

    ctx = ctx or JobContext()
    out_dir = Path(out_dir or models_dir() / "digits-onestep")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    bundle = load_model(teacher)
    cfg = SFDConfig(batch=batch, seed=seed, stage1=None)
    s = settings_for(bundle, cfg, steps)
    trainer = SFDTrainer(bundle, bundle.unet, s, retain=list(range(bundle.summary.num_classes)))
    stats = yield from trainer.train(ctx, stage="distil")
    seconds = time.perf_counter() - t0
    extra = {"teacher": teacher, "teacher_sha256": bundle.summary.sha256,
             "sfd_stage1": {k: v for k, v in s.__dict__.items()} | {"seconds": round(seconds, 1),
                                                                     "weights": "float16"}}
    save_one_step(bundle, trainer.ema_generator(), out_dir, s.t_init, trainer.sigma_init, extra_meta=extra,
                  extra_modules={"fake_score": trainer.fake}, half=True)
    yield Log("info", f"digits-onestep written to {out_dir} in {seconds:.0f} s")
    return {"seconds": seconds, "path": str(out_dir), "steps": int(stats["steps"])}
