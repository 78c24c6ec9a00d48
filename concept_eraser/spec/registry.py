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
class MemoryEstimate:
    """How much memory a run of a method takes: measured on the demo models, and a rule for full-size ones.

    demo_peak_mib: demo model name -> peak resident memory (MiB) of a whole run in one process (load, before
        grid, method, after grid, save) on a CPU in float32, as bench/method_memory.py measures it.
    demo_added_mib: demo model name -> what the method itself adds over the loaded model (MiB); most of a
        demo run's peak is Python, torch and the libraries, which any run pays.
    full_size: how it grows on a full-size model. An ESTIMATE from parameter counts, not a measurement.
    measured: when, on which commit and with which command the demo figures were taken.
    """

    demo_peak_mib: dict[str, int] = field(default_factory=dict)
    demo_added_mib: dict[str, int] = field(default_factory=dict)
    full_size: str = ""
    measured: str = ""

    def __bool__(self) -> bool:
        return bool(self.demo_peak_mib or self.full_size)

    def demo_text(self) -> str:
        """The measured demo figures in one sentence; empty when none were measured."""
        demos = [f"{mib} MiB on the {name} demo" + (f" (the method adds {self.demo_added_mib[name]} MiB)"
                                                     if name in self.demo_added_mib else "")
                 for name, mib in self.demo_peak_mib.items()]
        return ("peak RAM of a whole run (CPU, float32, measured): " + ", ".join(demos)) if demos else ""

    def text(self) -> str:
        """One paragraph for the CLI: the measured demo figures, then the full-size estimate."""
        full = f"full-size models, estimated from parameter counts: {self.full_size}" if self.full_size else ""
        return "; ".join(p for p in (self.demo_text(), full) if p)


@dataclass(frozen=True)
class MethodCard:
    """What the GUI needs to offer a method: its descriptor and its config as a JSON schema."""

    info: MethodInfo
    config_schema: dict[str, Any]  # pydantic model_json_schema() of the method's Config
    defaults: dict[str, Any]
    estimate: str = ""  # e.g. "about 2 min on a 2-core CPU for the digits demo"
    memory: MemoryEstimate = field(default_factory=MemoryEstimate)  # peak memory, beside the time estimate

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
