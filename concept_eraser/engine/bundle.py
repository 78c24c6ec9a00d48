"""ModelBundle: a loaded diffusion model, its parts, and a torch-free summary of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from concept_eraser.spec.summary import ModelSummary

# Side file in a diffusers folder with what diffusers' configs cannot say (class names, null class, defaults).
META_FILE = "concept_eraser.json"


@dataclass
class ModelBundle:
    summary: ModelSummary
    unet: torch.nn.Module
    scheduler: Any  # the model's own scheduler (its config seeds the sampling schedulers)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    text_encoder_2: torch.nn.Module | None = None  # SDXL
    tokenizer_2: Any = None
    pipe: Any = None  # sd/sdxl: the diffusers pipeline holding the same modules
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.summary.kind

    def components(self) -> dict[str, torch.nn.Module]:
        names = ("unet", "vae", "text_encoder", "text_encoder_2")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
