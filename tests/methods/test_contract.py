"""Every registered method's smoke config runs through the unlearn job on each demo model kind it supports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from concept_eraser.engine.catalog import demo_models
from concept_eraser.engine.loading import load_model, stored_dtype
from concept_eraser.engine.session import Session
from concept_eraser.engine.unlearn_job import unlearn_job
from concept_eraser.methods import METHOD_CLASSES
from concept_eraser.spec import (
    CancelToken,
    Concept,
    ForgetImage,
    GridReady,
    JobContext,
    JobSpec,
    ModelSource,
    Progress,
    SampleRow,
    SamplingSpec,
    StageStarted,
    guarded,
    run_blocking,
)

READY = {m.name for m in demo_models() if m.available}
DEMO_OF_KIND = {"ddpm-cond": "digits", "sd": "shapes"}
CASES = [(cls.info.key, kind) for cls in METHOD_CLASSES for kind in sorted(cls.info.model_kinds)
         if kind in DEMO_OF_KIND]


@pytest.fixture(scope="module")
def bundles():
    return {name: load_model(name) for name in ("digits", "shapes") if name in READY}


def _images(folder, channels: int, size: int, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).convert("L" if channels == 1 else "RGB").save(folder / f"x{i}.png")
    return [ForgetImage(path=str(folder))]


def _spec(cls, demo: str, bundle, tmp_path) -> JobSpec:
    needs = cls.info.needs
    digits = demo == "digits"
    s = bundle.summary
    return JobSpec(
        model=ModelSource(path=demo),
        concepts=[Concept(label=3) if digits else Concept(text="striped")],
        forget_images=_images(tmp_path / "imgs", s.channels, s.resolution) if needs.forget_images else [],
        anchor=(Concept(label=8) if digits else Concept(text="solid")) if needs.anchor else None,
        retain=[SampleRow(label=1)] if digits else [SampleRow(prompt="a blue solid square")],
        method=cls.info.key,
        method_config=cls.Config.smoke().model_dump(mode="json"),
        sampling=SamplingSpec(rows=[SampleRow(label=3) if digits else SampleRow(prompt="a red striped circle")],
                              seeds=[0, 1], steps=2),
    )


def _state(bundle) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in bundle.components().items()}


def _changed(a, b) -> set[str]:
    return {n for n in a if any(not torch.equal(a[n][k], b[n][k]) for k in a[n])}


@pytest.mark.parametrize(("key", "kind"), CASES, ids=[f"{k}-{d}" for k, d in CASES])
def test_method_smoke(key, kind, bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    demo = DEMO_OF_KIND[kind]
    if demo not in bundles:
        pytest.skip(f"{demo} demo model is not built")
    cls = next(c for c in METHOD_CLASSES if c.info.key == key)
    bundle = bundles[demo]
    original = _state(bundle)
    spec = _spec(cls, demo, bundle, tmp_path)
    session = Session(bundle)

    # A cancelled run (first training step, or the after grid for methods without steps) restores the model.
    ctx = JobContext(cancel=CancelToken(), preview_every=0)
    job = guarded(unlearn_job(spec, ctx, tmp_path / "cancelled", bundle=bundle, session=session, samples=0))

    def on_event(e):
        if (isinstance(e, Progress) and e.stage == "unlearn") or (isinstance(e, StageStarted)
                                                                   and e.stage == "sample_after"):
            ctx.cancel.cancel()

    result = run_blocking(job, on_event)
    assert result.status == "cancelled", result.error
    assert not _changed(original, _state(bundle)), "a cancelled run must restore the loaded model"

    events = []
    result = run_blocking(guarded(unlearn_job(spec, JobContext(), tmp_path / "run", bundle=bundle, session=session,
                                              samples=0)), events.append)
    assert result.status == "finished", f"{result.error}\n{result.details}"
    changed = _changed(original, _state(bundle))
    assert changed, f"{key} changed no tensor"
    assert changed <= set(cls.info.edits), f"{key} changed {changed - set(cls.info.edits)} it did not declare"
    run = tmp_path / "run"
    for name in ("job.json", "before.png", "after.png", "scores.json", "model/model_index.json"):
        assert (run / name).is_file(), name
    assert sum(isinstance(e, GridReady) for e in events) == 2
    edited = load_model(run / "model")
    for name in changed:
        after = getattr(bundle, name).state_dict()
        assert all(torch.equal(v, after[k]) for k, v in getattr(edited, name).state_dict().items())
    session.revert()
    assert not _changed(original, _state(bundle))


HALF_CASES = [("esd-x", "sd"), ("vdu", "ddpm-cond"), ("sfd", "sd")]


@pytest.mark.parametrize(("key", "kind"), HALF_CASES, ids=[f"{k}-{d}" for k, d in HALF_CASES])
def test_method_runs_on_half_precision_model(key, kind, tmp_path, monkeypatch):
    # On a GPU models load in bf16 by default: the job (grids, preview at step 0, training on float32 master
    # copies, save) must run through there too. Before the fix these raised dtype mismatches.
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    demo = DEMO_OF_KIND[kind]
    if demo not in READY:
        pytest.skip(f"{demo} demo model is not built")
    bundle = load_model(demo, dtype=torch.bfloat16)
    cls = next(c for c in METHOD_CLASSES if c.info.key == key)
    original = _state(bundle)
    spec = _spec(cls, demo, bundle, tmp_path)
    result = run_blocking(guarded(unlearn_job(spec, JobContext(), tmp_path / "run", bundle=bundle,
                                              session=Session(bundle), samples=0)), lambda e: None)
    assert result.status == "finished", f"{result.error}\n{result.details}"
    changed = _changed(original, _state(bundle))
    assert changed, f"{key} changed no tensor"
    assert all(v.dtype == torch.bfloat16 for n in changed for v in getattr(bundle, n).state_dict().values()
               if v.is_floating_point())
    # The run's model is saved as the demo stores it (float32): what the run did not change is the user's
    # tensors bit for bit, so a delta holds only the edit (saved in bf16, every tensor differed by rounding).
    saved, base = _state(load_model(tmp_path / "run" / "model")), _state(load_model(demo))
    assert stored_dtype(tmp_path / "run" / "model") == torch.float32
    moved = {(n, k) for n in base for k in base[n] if not torch.equal(base[n][k], saved[n][k])}
    assert moved and {n for n, _ in moved} <= changed
    # moved: tensors whose bf16 value changed, or that training kept a float32 value for (an edit below bf16's
    # spacing still reaches the saved model)
    from concept_eraser.engine.training import master_value

    kept = {(n, k) for n in changed for k, p in getattr(bundle, n).named_parameters() if master_value(p) is not None}
    edited = {(n, k) for n in changed for k in original[n]
              if not torch.equal(original[n][k], getattr(bundle, n).state_dict()[k])}
    assert moved <= edited | kept
