"""The unlearn job on the digits demo: cancel, resume (bitwise), failure restores, user files untouched."""

from __future__ import annotations

import json

import pytest
import torch

from concept_eraser.engine import training
from concept_eraser.engine.catalog import demo_models
from concept_eraser.engine.loading import load_model, resolve_path
from concept_eraser.engine.session import Session
from concept_eraser.engine.unlearn_job import unlearn_job
from concept_eraser.spec import (
    CancelToken,
    Concept,
    JobContext,
    JobSpec,
    ModelSource,
    Preview,
    Progress,
    SampleRow,
    SamplingSpec,
    StageStarted,
    guarded,
    run_blocking,
)
from concept_eraser.spec.files import sha256_file

pytestmark = pytest.mark.skipif("digits" not in {m.name for m in demo_models() if m.available},
                                reason="digits demo model is not built")
CFG = {"steps": 4, "batch": 2, "rollout_steps": 4, "lr": 1e-3}


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))


def _spec(**cfg) -> JobSpec:
    return JobSpec(model=ModelSource(path="digits"), concepts=[Concept(label=3)], method="esd-x",
                   method_config={**CFG, **cfg}, seed=7,
                   sampling=SamplingSpec(rows=[SampleRow(label=3), SampleRow(label=1)], seeds=[0, 1], steps=2))


def _unet(bundle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bundle.unet.state_dict().items()}


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _run(spec, run_dir, bundle, session=None, ctx=None, resume=False, on_event=lambda e: None):
    ctx = ctx or JobContext(preview_every=2)
    own = session is None
    session = session or Session(bundle)
    result = run_blocking(guarded(unlearn_job(spec, ctx, run_dir, resume=resume, bundle=bundle, session=session,
                                              samples=0)), on_event)
    if own:
        session.revert()  # tests share one loaded model
    return result


def test_events_outputs_and_user_files_untouched(digits, tmp_path):
    folder = resolve_path(ModelSource(path="digits"))
    hashes = {f: sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}
    events = []
    result = _run(_spec(), tmp_path / "run", digits, on_event=events.append)
    assert result.ok, result.details
    stages = [e.stage for e in events if isinstance(e, StageStarted)]
    for stage in ("sample_before", "unlearn", "sample_after", "metrics"):
        assert stage in stages
    progress = [e for e in events if isinstance(e, Progress) and e.stage == "unlearn"]
    assert [p.step for p in progress] == [1, 2, 3, 4] and all("loss" in p.scalars for p in progress)
    assert [p.step for p in events if isinstance(p, Preview)] == [0, 2]
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["scores"]
    assert scores["steps"] == 4 and "loss" in scores
    assert result.value.outputs["model"].endswith("model")
    assert {f: sha256_file(f) for f in hashes} == hashes, "the user's model files were written"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_cancel_then_resume_is_bitwise(digits, tmp_path):
    session = Session(digits)
    original = _unet(digits)
    full = _run(_spec(), tmp_path / "full", digits, session=session)
    assert full.ok, full.details
    want = _unet(digits)
    session.revert()
    assert _same(_unet(digits), original)

    ctx = JobContext(cancel=CancelToken(), preview_every=0)

    def cancel_at_2(e):
        if isinstance(e, Progress) and e.stage == "unlearn" and e.step == 2:
            ctx.cancel.cancel()

    part = _run(_spec(), tmp_path / "part", digits, session=session, ctx=ctx, on_event=cancel_at_2)
    assert part.status == "cancelled"
    ck = training.load_checkpoint(tmp_path / "part")
    assert ck["step"] == 2, "cancel must stop within one optimizer step and checkpoint the last one"
    assert _same(_unet(digits), original), "a cancelled run restores the loaded model"
    resumed = _run(_spec(), tmp_path / "part", digits, session=session, resume=True)
    assert resumed.ok, resumed.details
    assert _same(_unet(digits), want), "resume must give the uninterrupted run's weights bitwise"
    session.revert()


def test_failed_run_restores_model(digits, tmp_path, monkeypatch):
    original = _unet(digits)
    real = training.step_generator

    def failing(seed, step, micro=0):
        if step == 2:
            raise RuntimeError("boom")
        return real(seed, step, micro)

    monkeypatch.setattr(training, "step_generator", failing)
    result = _run(_spec(), tmp_path / "run", digits)
    assert result.status == "failed" and "boom" in result.error
    assert _same(_unet(digits), original)


def test_resume_with_other_settings_is_refused(digits, tmp_path):
    assert _run(_spec(), tmp_path / "run", digits).ok
    result = _run(_spec(lr=5e-4), tmp_path / "run", digits, resume=True)
    assert result.status == "failed" and result.user_error and "method config" in result.error


def test_bad_config_and_kind_are_user_errors(digits, tmp_path):
    r = _run(_spec(eta=-1), tmp_path / "a", digits)
    assert r.user_error and "esd-x setting eta" in r.error
    r = _run(_spec().model_copy(update={"concepts": [Concept(text="cat")]}), tmp_path / "b", digits)
    assert r.user_error and "class labels" in r.error
