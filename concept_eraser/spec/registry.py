"""Descriptors of methods, metrics, runs and exports. Torch-free so the GUI can list and describe them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from .events import Grid


class MethodConfig(BaseModel):
    """Base of every method's hyperparameters: frozen, JSON-serialisable, rejects unknown keys.

    Fields carry a description and bounds (the GUI's tooltips and spin-box limits); fields for experts
    are marked with json_schema_extra={"advanced": True}.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def smoke(cls) -> MethodConfig:
        """Tiny settings (a step or two) used by the contract test and the GUI's dry run."""
        raise NotImplementedError(f"{cls.__name__} must define smoke()")


@dataclass(frozen=True)
class Needs:
    concept: bool = False
    forget_images: bool = False
    retain: bool = False
    anchor: bool = False


@dataclass(frozen=True)
class MethodInfo:
    key: str  # stable id stored in job files: "esd-x", "vdu", ...
    title: str
    paper: str
    summary: str
    model_kinds: frozenset[str]
    needs: Needs
    edits: tuple[str, ...]


@dataclass(frozen=True)
class MethodCard:
    """What the GUI needs to offer a method: its descriptor and its config as a JSON schema."""

    info: MethodInfo
    config_schema: dict[str, Any]  # pydantic model_json_schema() of the method's Config
    defaults: dict[str, Any]
    estimate: str = ""  # e.g. "about 2 min on a 2-core CPU for the digits demo"

    def fits(self, kind: str) -> bool:
        return kind in self.info.model_kinds


@dataclass(frozen=True)
class MetricInfo:
    key: str
    title: str
    description: str  # names its backbone, resolution and sample count
    higher_is_better: bool
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportFormat:
    key: str  # "diffusers", "single-file", "delta", "lora"
    title: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"rank": 16} for lora


@dataclass(frozen=True)
class RunOutcome:
    """What an unlearn job returns: where its files are, its grids and its scores."""

    run_dir: str
    method: str
    scores: dict[str, float]
    before: Grid | None = None
    after: Grid | None = None
    steps: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)  # name -> path (model, job.json, grids, scores.json)
