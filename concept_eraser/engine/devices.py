"""Device and dtype choice: float32 on CPU (bf16 is several times slower there), half precision on GPUs."""

from __future__ import annotations

import os

import torch

from concept_eraser.spec.runloop import UserError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def process_rank() -> tuple[int, int, int]:
    """(rank, local rank, world size) under torchrun / `accelerate launch`; (0, 0, 1) in a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def resolve_device(name: str = "auto") -> torch.device:
    _, local, world = process_rank()
    if world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local)  # one GPU per process
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if device.type == "cpu" and name != "float32":
        raise UserError(f"{name} on CPU is several times slower than float32 here; use --dtype float32 "
                        f"(job files: device.dtype)")
    return _DTYPES[name]
