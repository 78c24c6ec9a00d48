"""Torch-free summary of a loaded model, shown by the GUI and the CLI and used by method checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

ModelKind = Literal["ddpm", "ddpm-cond", "sd", "sdxl"]


@dataclass(frozen=True)
class ModelSummary:
    kind: ModelKind
    architecture: str  # "DDPM UNet2DModel", "SD 1.x", "SD 2.x", "SDXL"
    prediction_type: str  # "epsilon", "v_prediction", "sample"
    resolution: int  # native pixel size
    dtype: str
    parameters: int
    sha256: str  # of the weights (file, or the folder's weight files combined)
    source: str
    single_file: bool = False
    components: tuple[str, ...] = ()
    channels: int = 3
    num_classes: int | None = None  # class-conditional: real classes (excluding the null class)
    null_class: int | None = None
    class_names: tuple[str, ...] | None = None
    default_guidance: float = 1.0
    default_steps: int = 30
    name: str | None = None  # bundled demo name

    @property
    def conditioning(self) -> Literal["text", "class", "none"]:
        if self.kind in ("sd", "sdxl"):
            return "text"
        return "class" if self.kind == "ddpm-cond" else "none"

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [
            f"kind          {self.kind} ({self.architecture})",
            f"prediction    {self.prediction_type}",
            f"resolution    {self.resolution}x{self.resolution}",
            f"dtype         {self.dtype}",
            f"parameters    {self.parameters:,}",
            f"sha256        {self.sha256}",
            f"components    {', '.join(self.components)}",
            f"source        {self.source}{' (single file)' if self.single_file else ''}",
        ]
        if self.num_classes is not None:
            names = f" ({', '.join(self.class_names)})" if self.class_names else ""
            out.append(f"classes       {self.num_classes}{names}; null class {self.null_class}")
        return out


@dataclass(frozen=True)
class DemoModel:
    name: str
    title: str
    kind: ModelKind
    path: str
    available: bool
    description: str = ""
    judge: str | None = None
    extra: dict = field(default_factory=dict)
