"""Exports never overwrite without --force, never write inside the sources, check free space first, and
leave no partial file after a failure or a cancel."""

from __future__ import annotations

import collections

import pytest
import safetensors.torch

from concept_eraser.engine import export_files
from concept_eraser.engine.apply import apply_job
from concept_eraser.engine.export import export_job
from concept_eraser.spec import JobContext, StageStarted, guarded, run_blocking
from concept_eraser.spec.files import sha256_file

from .conftest import FAST


def run(run_dir, fmt, out, ctx=None, on_event=lambda e: None, **options):
    return run_blocking(guarded(export_job(run_dir, fmt, out, ctx or JobContext(), {**FAST, **options})), on_event)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def snapshot(folder):
    return {f: sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def test_existing_target_needs_force(runs, tmp_path):
    out = tmp_path / "edit.safetensors"
    out.write_bytes(b"keep me")
    result = run(runs["sd1"], "delta", out)
    assert result.status == "failed" and result.user_error and "--force" in result.error
    assert out.read_bytes() == b"keep me"
    result = run(runs["sd1"], "delta", out, force=True)
    assert result.ok, result.details
    assert out.read_bytes() != b"keep me" and leftovers(tmp_path) == []


def test_never_writes_inside_the_sources(runs, bases):
    before = {**snapshot(bases["sd1"]), **snapshot(runs["sd1"] / "model")}
    for out in (bases["sd1"] / "unet" / "x.safetensors", runs["sd1"] / "model" / "x.safetensors",
                runs["sd1"] / "model", bases["sd1"]):
        result = run(runs["sd1"], "single-file" if out.suffix else "diffusers", out, force=True)
        assert result.status == "failed" and "only read" in result.error, out
    assert {**snapshot(bases["sd1"]), **snapshot(runs["sd1"] / "model")} == before


def test_refuses_when_the_disk_is_full(runs, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(export_files.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    for fmt, name in (("diffusers", "d"), ("single-file", "s.safetensors"), ("lora", "l.safetensors")):
        result = run(runs["sd1"], fmt, tmp_path / name)
        assert result.status == "failed" and result.user_error
        assert result.error.startswith("not enough disk space") and "\n" not in result.error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["single-file", "delta", "lora"])
def test_failure_mid_write_leaves_no_partial_file(runs, tmp_path, monkeypatch, fmt):
    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)  # half a file, then the disk goes away
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    out = tmp_path / "x.safetensors"
    result = run(runs["sd1"], fmt, out)
    assert result.status == "failed" and "No space left" in result.error
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_verification_leaves_nothing(runs, tmp_path):
    ctx = JobContext()

    def on_event(e):
        if isinstance(e, StageStarted) and e.stage == "verify":
            ctx.cancel.cancel()

    result = run(runs["sd1"], "diffusers", tmp_path / "d", ctx=ctx, on_event=on_event)
    assert result.status == "cancelled"
    assert list(tmp_path.iterdir()) == []


def test_apply_refuses_overwrite_and_the_base_folder(runs, bases, tmp_path):
    delta = tmp_path / "d.safetensors"
    assert run(runs["sd1"], "delta", delta).ok
    (tmp_path / "taken").mkdir()
    result = run_blocking(guarded(apply_job(str(bases["sd1"]), delta, tmp_path / "taken", JobContext())))
    assert result.status == "failed" and "--force" in result.error
    result = run_blocking(guarded(apply_job(str(bases["sd1"]), delta, bases["sd1"] / "out", JobContext())))
    assert result.status == "failed" and "only read" in result.error


def test_one_step_models_export_only_as_diffusers(tmp_path):
    """A one-step (SFD) model in a LoRA, delta or single file would be sampled as a multi-step model."""
    import shutil

    from concept_eraser.engine.catalog import demo_models
    from concept_eraser.spec import Concept, JobSpec, ModelSource

    source = next((m for m in demo_models() if m.name == "shapes-onestep"), None)
    if source is None or not source.available:
        pytest.skip("the shipped shapes-onestep model is missing")
    run_dir = tmp_path / "run"
    shutil.copytree(source.path, run_dir / "model")
    spec = JobSpec(model=ModelSource(path="shapes"), concepts=[Concept(text="striped")], method="sfd")
    (run_dir / "job.json").write_text(spec.to_json())
    for fmt, name in (("lora", "l.safetensors"), ("delta", "d.safetensors"), ("single-file", "s.safetensors")):
        result = run(run_dir, fmt, tmp_path / name)
        assert result.status == "failed" and result.user_error and "one-step" in result.error, (fmt, result.error)
        assert not (tmp_path / name).exists()
    result = run(run_dir, "diffusers", tmp_path / "d")
    assert result.ok, result.details
    assert (tmp_path / "d" / "model_index.json").is_file()
