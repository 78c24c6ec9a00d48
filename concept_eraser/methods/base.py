"""The method contract: one file per method = one Config + one MethodInfo + one Method class.

A method edits `run.bundle` in place inside `run(...)`, a generator that yields events (progress,
previews, logs) and returns a dict of final statistics. Trained methods hand a loss closure to
`concept_eraser.engine.training.train`, which owns the optimizer, gradient clipping, accumulation,
cancel, checkpoints and resume; closed-form methods (UCE) edit tensors directly. The engine restores
the loaded model when a run fails or is cancelled, so a method never has to clean up.

Inputs: `run.inputs` (engine.unlearn.ForgetInputs) holds the concepts, anchor, retain rows (for class
models, every class not forgotten when the job names none) and the example images (pixels in [-1, 1],
N x C x H x W at the model's native size) loaded from the job's forget images. A Config field
`generate: int` asks the engine to add that many images per concept made by the original model (cached
per model hash, concept and seeds); `engine.inputs.generate_anchor_images(...)` does the same for the anchor.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

from concept_eraser.spec.events import Event
from concept_eraser.spec.jobspec import JobSpec
from concept_eraser.spec.registry import MethodCard, MethodConfig, MethodInfo
from concept_eraser.spec.runloop import UserError
from concept_eraser.spec.summary import ModelSummary

from .memory import memory_of  # measured per method by bench/method_memory.py

if TYPE_CHECKING:
    from concept_eraser.engine.unlearn import UnlearnRun


class Method:
    info: ClassVar[MethodInfo]
    Config: ClassVar[type[MethodConfig]]
    estimate: ClassVar[str] = ""

    @classmethod
    def card(cls) -> MethodCard:
        return MethodCard(info=cls.info, config_schema=cls.Config.model_json_schema(),
                          defaults=cls.Config().model_dump(mode="json"), estimate=cls.estimate,
                          memory=memory_of(cls.info.key))

    def parse_config(self, data: dict[str, Any] | MethodConfig | None) -> MethodConfig:
        """Validate a config from a job file; the first problem becomes a one-line UserError."""
        from pydantic import ValidationError

        if isinstance(data, self.Config):
            return data
        try:
            return self.Config.model_validate(dict(data or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "config"
            raise UserError(f"{self.info.key} setting {where}: {err['msg']}") from exc

    def check(self, summary: ModelSummary, spec: JobSpec, config: MethodConfig) -> None:
        """Raise UserError when the model or the inputs do not fit this method (before anything runs)."""
        info = self.info
        if summary.kind not in info.model_kinds:
            kinds = ", ".join(sorted(info.model_kinds))
            raise UserError(f"{info.key} works on {kinds} models, not {summary.kind}; pick another method")
        if info.needs.concept and not spec.concepts:
            what = "a class label (--forget 3)" if summary.conditioning == "class" else "a concept text (--forget 'striped')"
            raise UserError(f"{info.key} needs a concept to forget: give {what}")
        if info.needs.forget_images and not spec.forget_images:
            raise UserError(f"{info.key} needs example images of what to forget: give --forget-images FOLDER")
        if info.needs.retain and not spec.retain:
            raise UserError(f"{info.key} needs retain prompts or classes: give --retain ...")
        if info.needs.anchor and spec.anchor is None:
            raise UserError(f"{info.key} needs an anchor concept to map the forgotten one onto: give --anchor ...")
        for c in spec.concepts + ([spec.anchor] if spec.anchor else []):
            if summary.conditioning == "class" and c.label is None:
                raise UserError(f"{summary.kind} models take class labels as concepts, not text {c.text!r}")
            if summary.conditioning == "text" and c.text is None:
                raise UserError(f"{summary.kind} models take concept texts, not class label {c.label}")
            if c.label is not None and summary.num_classes is not None and c.label >= summary.num_classes:
                raise UserError(f"class {c.label} does not exist; this model has classes 0-{summary.num_classes - 1}")

    def run(self, run: UnlearnRun, config: MethodConfig) -> Generator[Event, None, dict[str, float]]:
        raise NotImplementedError
