"""JobSpec: everything a run needs, as a frozen, versioned, JSON/TOML-serialisable value.

The wizard builds it, the CLI reads it, every output folder holds a copy and exports carry it in
their metadata. Old files are upgraded by MIGRATIONS on load.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .files import atomic_write_text
from .runloop import UserError

SCHEMA_VERSION = 1
SCHEDULERS = ("ddim", "ddpm", "euler", "dpm++")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSource(_Frozen):
    """Where the model comes from: a bundled demo name, a diffusers folder, or a single file."""

    path: str = Field(description="Bundled demo name (e.g. 'digits'), a diffusers folder, or a .safetensors/.ckpt file.")
    config_dir: str | None = Field(
        None, description="Local diffusers folder (no weights needed) with the component configs for a single file."
    )
    sha256: str | None = Field(None, description="Expected sha256 of the weights; checked on load when given.")

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the model path is empty: give a demo name, a folder or a .safetensors file")
        return v


class SampleRow(_Frozen):
    """One grid row: a text prompt, a class label, or unconditional (neither)."""

    prompt: str | None = None
    label: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> SampleRow:
        if self.prompt is not None and self.label is not None:
            raise ValueError("a row is a prompt or a class label, not both")
        return self

    @property
    def kind(self) -> Literal["prompt", "label", "unconditional"]:
        if self.prompt is not None:
            return "prompt"
        return "label" if self.label is not None else "unconditional"

    def describe(self, class_names: tuple[str, ...] | None = None) -> str:
        if self.prompt is not None:
            return self.prompt
        if self.label is not None:
            if class_names and self.label < len(class_names):
                return f"class {self.label} ({class_names[self.label]})"
            return f"class {self.label}"
        return "unconditional"

    @classmethod
    def parse(cls, text: str) -> SampleRow:
        """CLI shorthand: '3' is class 3, 'uncond'/'unconditional' is unconditional, anything else a prompt."""
        t = text.strip()
        if re.fullmatch(r"\d+", t):
            return cls(label=int(t))
        if t.lower() in ("uncond", "unconditional", "none"):
            return cls()
        return cls(prompt=t)


class SamplingSpec(_Frozen):
    """Same-seed grid: rows x seeds, identical for before and after."""

    rows: list[SampleRow] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    scheduler: Literal["ddim", "ddpm", "euler", "dpm++"] = "ddim"
    steps: int = Field(30, ge=1, le=1000, description="Denoising steps.")
    guidance: float | None = Field(
        None, ge=0.0, le=50.0, description="Classifier-free guidance scale (1 = none); None uses the model's default."
    )
    height: int | None = Field(None, ge=8, le=4096, description="Pixels; None uses the model's native size.")
    width: int | None = Field(None, ge=8, le=4096)
    negative_prompt: str = ""
    batch_size: int = Field(16, ge=1, le=1024, description="Cells per forward pass (does not change pixels); "
                            "large models run fewer, so one pass fits a consumer GPU (16 for SD 1.x at 512 px).")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be unique")
        if any(s < 0 or s >= 2**63 for s in v):
            raise ValueError("seeds must be between 0 and 2**63-1")
        return v

    @model_validator(mode="after")
    def _size(self) -> SamplingSpec:
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and v % 8:
                raise ValueError(f"{name} must be a multiple of 8, got {v}")
        return self


class Concept(_Frozen):
    """A concept to forget (or an anchor): a text for text-conditioned models, a class label otherwise."""

    text: str | None = None
    label: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> Concept:
        if (self.text is None) == (self.label is None):
            raise ValueError("a concept is either a text or a class label")
        if self.text is not None and not self.text.strip():
            raise ValueError("a concept text is empty")
        return self


class ForgetImage(_Frozen):
    path: str
    sha256: str | None = None


class DeviceSpec(_Frozen):
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


class JobSpec(_Frozen):
    schema_version: Literal[1] = SCHEMA_VERSION
    model: ModelSource
    concepts: list[Concept] = Field(default_factory=list, description="Concepts to forget.")
    forget_images: list[ForgetImage] = Field(default_factory=list)
    anchor: Concept | None = None
    retain: list[SampleRow] = Field(default_factory=list, description="Prompts or classes that must stay.")
    method: str | None = None
    method_config: dict[str, Any] = Field(default_factory=dict)
    sampling: SamplingSpec | None = None
    metrics: list[str] = Field(default_factory=list)
    seed: Annotated[int, Field(ge=0, description="Training seed (separate from grid seeds).")] = 0
    device: DeviceSpec = Field(default_factory=DeviceSpec)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)


# version n -> n+1; applied in order on load.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise UserError(f"job file has an invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"job file has schema_version {version}, newer than this concept_eraser understands "
            f"({SCHEMA_VERSION}); update concept_eraser"
        )
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](dict(data))
        version += 1
        data["schema_version"] = version
    return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "job"
    return f"{where}: {err['msg']}"


def parse_job(data: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(migrate(data))
    except ValidationError as exc:
        raise UserError(f"invalid job: {_first_error(exc)}") from exc


def load_job(path: str | Path) -> JobSpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"job file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path.name} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path.name}: a job file holds one object")
    return parse_job(data)


def save_job(spec: JobSpec, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".toml":
        import tomli_w

        text = tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))
    else:
        text = spec.to_json() + "\n"
    return atomic_write_text(path, text)
