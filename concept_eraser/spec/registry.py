"""Descriptors of methods and metrics. Torch-free so the GUI can list and describe them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class MethodConfig(BaseModel):
    """Base of every method's hyperparameters: frozen, JSON-serialisable, rejects unknown keys."""

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
class MetricInfo:
    key: str
    title: str
    description: str  # names its backbone, resolution and sample count
    higher_is_better: bool
    weights: tuple[str, ...] = ()
