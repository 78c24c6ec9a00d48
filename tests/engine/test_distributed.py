"""The shared training loop is data parallel under torchrun / `accelerate launch` (CPU processes, gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("dist_train_script.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.timeout(400)
def test_two_processes_equal_one_process_accumulating_their_draws(tmp_path):
    # 2 processes x 1 micro-step must average the same two draws that 1 process accumulates over 2 micro-steps;
    # without the gradient all-reduce each process would step on its own draw alone and the results differ.
    single, dist = tmp_path / "single.pt", tmp_path / "dist.pt"
    _run([sys.executable, str(SCRIPT), str(single), "2"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
          str(dist), "1"], tmp_path)
    a, b = torch.load(single), torch.load(dist)
    assert b["world"] == 2
    # a 1-process run with grad_accum 1 is the control: it must differ, so the comparison can fail
    alone = tmp_path / "alone.pt"
    _run([sys.executable, str(SCRIPT), str(alone), "1"], tmp_path)
    c = torch.load(alone)
    assert not torch.allclose(c["w"], a["w"], atol=1e-4)
    torch.testing.assert_close(b["w"], a["w"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["b"], a["b"], atol=1e-5, rtol=1e-5)


def _unet(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(next((run / "model" / "unet").glob("*.safetensors")))


@pytest.mark.timeout(500)
def test_erase_under_torchrun_trains_data_parallel_and_one_process_writes(tmp_path):
    # `concept-eraser erase` under 2 processes = one process with grad_accum 2 (esd-x on the digits demo)
    common = ["erase", "--model", "digits", "--method", "esd-x", "--forget", "3", "--steps", "3", "--samples", "0",
              "--seeds", "0-1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "concept_eraser", *common, "--out", "dist"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("esd-x finished") == 1  # the second process prints and writes nothing
    _run([sys.executable, "-m", "concept_eraser", *common, "--set", "grad_accum=2", "--out", "single"], tmp_path)
    a, b = _unet(tmp_path / "dist"), _unet(tmp_path / "single")
    from concept_eraser.engine.loading import load_model
    from concept_eraser.spec import ModelSource

    orig = load_model(ModelSource(path="digits"), device="cpu").unet.state_dict()
    assert any(not torch.equal(a[k], orig[k]) for k in a)  # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
