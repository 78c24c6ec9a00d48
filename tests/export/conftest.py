"""Run folders for export tests: a tiny base model (SD 1.x / 2.x / SDXL) and an "edited" copy.

The edit adds a rank-2 change to some cross-attention (attn2) key/value weights, one text-encoder
projection and (SD 1.x) one 3x3 convolution, so a LoRA of rank >= 2 reproduces it exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.unlearn_job import save_model
from concept_eraser.spec import Concept, JobSpec, ModelSource, SampleRow

from ..engine.tiny_sd import make_tiny_sd, make_tiny_sd2, make_tiny_sdxl

MAKERS = {"sd1": make_tiny_sd, "sd2": make_tiny_sd2, "sdxl": make_tiny_sdxl}
FAST = {"seeds": [0, 1], "verify_steps": 3}  # a small verification grid keeps the tests fast


def low_rank(shape, rank: int, g: torch.Generator, scale: float = 0.3) -> torch.Tensor:
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod())
    d = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)
    return (scale * d / d.abs().max()).reshape(shape)


def edit_names(bundle) -> list[str]:
    names = [f"unet.{k}" for k in bundle.unet.state_dict() if "attn2.to_k.weight" in k or "attn2.to_v.weight" in k]
    names.append("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"
                 if "text_model.encoder.layers.0.self_attn.q_proj.weight" in bundle.text_encoder.state_dict()
                 else "text_encoder.encoder.layers.0.self_attn.q_proj.weight")
    if bundle.text_encoder_2 is not None:
        names.append("text_encoder_2.text_model.encoder.layers.1.mlp.fc1.weight")
    if bundle.summary.kind == "sd":
        names.append("unet.down_blocks.0.resnets.0.conv1.weight")  # a 3x3 conv: LoCon
    return names


def make_run(base: Path, run_dir: Path, rank: int = 2, seed: int = 0) -> Path:
    """A finished-run folder (job.json, scores.json, model/) whose model is `base` plus a low-rank edit."""
    from concept_eraser.engine.weight_diff import flat_state

    bundle = load_model(str(base))
    g = torch.Generator().manual_seed(seed)
    state = flat_state(bundle)
    with torch.no_grad():
        for name in edit_names(bundle):
            state[name].add_(low_rank(state[name].shape, rank, g))
    save_model(bundle, run_dir / "model")
    spec = JobSpec(model=ModelSource(path=str(base), sha256=bundle.summary.sha256),
                   concepts=[Concept(text="red circle")], retain=[SampleRow(prompt="a blue dog")], method="esd-x",
                   method_config={"steps": 1})
    (run_dir / "job.json").write_text(spec.to_json())
    (run_dir / "scores.json").write_text(json.dumps({"method": "esd-x", "scores": {"loss": 0.5, "steps": 1}}))
    return run_dir


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict[str, Path]:
    return {name: make(tmp_path_factory.mktemp(f"base-{name}")) for name, make in MAKERS.items()}


@pytest.fixture(scope="session")
def runs(bases, tmp_path_factory) -> dict[str, Path]:
    return {name: make_run(base, tmp_path_factory.mktemp(f"run-{name}")) for name, base in bases.items()}
