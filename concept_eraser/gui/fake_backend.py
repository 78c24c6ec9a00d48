"""FakeBackend: the whole spec.Backend protocol without torch (numpy only), for GUI tests and screenshots.

Images are drawn procedurally: the "digits" demo draws seven-segment digits per class label, the "shapes"
demo draws coloured circles/squares/triangles named in the prompt. After a run the forgotten concept's
rows turn into grey noise, everything else stays (with a little same-seed jitter). Jobs are step-wise,
check the CancelToken every step and can be told to fail (constructor argument or the `fail_at_step`
config field), so every path of the GUI can be exercised.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from concept_eraser.spec.events import (
    Grid,
    GridReady,
    JobResult,
    Log,
    MetricReady,
    Preview,
    Progress,
    StageStarted,
)
from concept_eraser.spec.files import atomic_write_text, sha256_file
from concept_eraser.spec.jobspec import DeviceSpec, JobSpec, ModelSource, SampleRow, SamplingSpec
from concept_eraser.spec.registry import (
    ExportFormat,
    MemoryEstimate,
    MethodCard,
    MethodConfig,
    MethodInfo,
    MetricInfo,
    Needs,
    RunOutcome,
)
from concept_eraser.spec.runloop import JobContext, UserError
from concept_eraser.spec.summary import DemoModel, ModelSummary

DIGIT_NAMES = tuple(str(i) for i in range(10))
COLOURS = {"red": (220, 50, 47), "green": (60, 170, 80), "blue": (38, 110, 210), "yellow": (235, 190, 30),
           "purple": (140, 80, 190), "orange": (240, 130, 40)}
SHAPES = ("circle", "square", "triangle")

# ---------------------------------------------------------------------------------------------- methods


class FakeEsdConfig(MethodConfig):
    """Erased Stable Diffusion (fake): steer the conditional prediction away from the concept."""

    steps: int = Field(60, ge=1, le=5000, description="Optimizer steps.")
    learning_rate: float = Field(1e-5, gt=0.0, le=0.01, description="AdamW learning rate.")
    negative_guidance: float = Field(1.0, ge=0.0, le=10.0, description="How hard to push away from the concept.")
    train_method: Literal["xattn", "noxattn", "full"] = Field(
        "xattn", description="Which UNet parameters are trained: cross-attention only, all but it, or all.")
    use_ema: bool = Field(False, description="Keep an exponential moving average of the edited weights.",
                          json_schema_extra={"advanced": True})
    fail_at_step: int = Field(-1, ge=-1, le=5000, description="Testing aid: raise an error at this step (-1: never).",
                              json_schema_extra={"advanced": True})

    @classmethod
    def smoke(cls) -> FakeEsdConfig:
        return cls(steps=2)


class FakeGradAscentConfig(MethodConfig):
    """Gradient ascent on the forget set with a retain term (fake)."""

    steps: int = Field(40, ge=1, le=5000, description="Optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0.0, le=0.1, description="Adam learning rate.")
    retain_weight: float = Field(1.0, ge=0.0, le=100.0, description="Weight of the retain loss.")
    batch_size: int = Field(16, ge=1, le=256, description="Images per step.", json_schema_extra={"advanced": True})
    fail_at_step: int = Field(-1, ge=-1, le=5000, description="Testing aid: raise an error at this step (-1: never).",
                              json_schema_extra={"advanced": True})

    @classmethod
    def smoke(cls) -> FakeGradAscentConfig:
        return cls(steps=2)


class FakeSdxlOnlyConfig(MethodConfig):
    """A method that fits no bundled model, so the GUI shows why it is not offered."""

    steps: int = Field(100, ge=1, le=5000, description="Optimizer steps.")

    @classmethod
    def smoke(cls) -> FakeSdxlOnlyConfig:
        return cls(steps=1)


# The fake methods' memory figures are placeholders of the real cards' shape (fake methods run nothing).
_METHODS: list[tuple[MethodInfo, type[MethodConfig], str, MemoryEstimate]] = [
    (MethodInfo("esd-x", "ESD-x (fake)", "Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023",
                "Fine-tunes cross-attention so the model's prediction for the concept points away from it.",
                frozenset({"sd", "sdxl", "ddpm-cond"}), Needs(concept=True, anchor=False), ("unet.attn2",)),
     FakeEsdConfig, "about 1 min on a 2-core CPU for the demo models",
     MemoryEstimate({"digits": 1000, "shapes": 1100}, {"digits": 150, "shapes": 200},
                    "the model's weights + 4 bytes × 3 per trained parameter (fake)", "fake backend")),
    (MethodInfo("ga", "Gradient ascent + retain (fake)", "Thudi et al., Unrolling SGD, EuroS&P 2022",
                "Raises the denoising loss on forget images while keeping it low on retain samples.",
                frozenset({"ddpm", "ddpm-cond", "sd"}), Needs(concept=True, retain=True), ("unet",)),
     FakeGradAscentConfig, "about 30 s on a 2-core CPU",
     MemoryEstimate({"digits": 900}, {"digits": 60}, "", "fake backend")),
    (MethodInfo("sdxl-only", "SDXL-only method (fake)", "—", "Offered for SDXL models only.",
                frozenset({"sdxl"}), Needs(concept=True), ("unet",)),
     FakeSdxlOnlyConfig, "", MemoryEstimate()),
]

# ---------------------------------------------------------------------------------------------- images

_SEGMENTS = {  # seven segments a..g per digit
    0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}


def _rng(*keys: Any) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(k).encode()) for k in keys])


def _digit(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.full((size, size, 3), 12, np.float32)
    s = size / 32
    ox, oy = 10 * s + rng.integers(-2, 3) * s, 5 * s + rng.integers(-2, 3) * s
    w, h, t = 12 * s, 11 * s, max(2, int(3 * s))
    boxes = {"a": (ox, oy, ox + w, oy + t), "g": (ox, oy + h, ox + w, oy + h + t), "d": (ox, oy + 2 * h, ox + w, oy + 2 * h + t),
             "f": (ox, oy, ox + t, oy + h + t), "b": (ox + w - t, oy, ox + w, oy + h + t),
             "e": (ox, oy + h, ox + t, oy + 2 * h + t), "c": (ox + w - t, oy + h, ox + w, oy + 2 * h + t)}
    for seg in _SEGMENTS[label % 10]:
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[seg])
        img[max(y0, 0):y1, max(x0, 0):x1] = 235
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape(prompt: str, size: int, rng: np.random.Generator) -> np.ndarray:
    words = prompt.lower().split()
    colour = next((COLOURS[w] for w in words if w in COLOURS), tuple(int(v) for v in rng.integers(60, 220, 3)))
    shape = next((w for w in words if w in SHAPES), SHAPES[zlib.crc32(prompt.encode()) % len(SHAPES)])
    bg = np.array([245, 242, 235], np.float32) - rng.integers(0, 25)
    img = np.broadcast_to(bg, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, size / 12, 2)
    r = size * rng.uniform(0.22, 0.32)
    if shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    elif shape == "square":
        mask = (abs(xx - cx) <= r * 0.85) & (abs(yy - cy) <= r * 0.85)
    else:
        mask = (yy <= cy + r * 0.8) & (yy >= cy - r) & (abs(xx - cx) <= (yy - (cy - r)) * 0.6)
    img[mask] = colour
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _erased(size: int, rng: np.random.Generator, colour: bool) -> np.ndarray:
    base = rng.normal(128 if colour else 40, 30, (size // 4, size // 4, 1 if not colour else 3))
    img = np.repeat(np.repeat(base, 4, 0), 4, 1)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _fake_sha(text: str) -> str:
    h = np.random.default_rng(zlib.crc32(text.encode())).integers(0, 16, 64)
    return "".join("0123456789abcdef"[int(v)] for v in h)


# ---------------------------------------------------------------------------------------------- backend


class FakeBackend:
    """spec.Backend on numpy. `step_delay` slows each training step (cancel tests); `fail` makes every
    unlearn job raise at step 1."""

    def __init__(self, step_delay: float = 0.0, fail: bool = False, sample_delay: float = 0.0) -> None:
        self.step_delay = step_delay
        self.sample_delay = sample_delay
        self.fail = fail
        self.summary: ModelSummary | None = None
        self.erased: tuple[SampleRow, ...] = ()

    # descriptors ----------------------------------------------------------------------------------
    def demo_models(self) -> list[DemoModel]:
        return [
            DemoModel("digits", "Digits", "ddpm-cond", "fake://digits", True,
                      "Class-conditional DDPM trained on 8x8 scikit-learn digits, upscaled to 16x16.",
                      judge="digits-svc", extra={"retain_presets": {"All other digits": []}}),
            DemoModel("shapes", "Shapes", "sd", "fake://shapes", True,
                      "Tiny Stable Diffusion trained on coloured circles, squares and triangles.",
                      judge="shapes-judge",
                      extra={"retain_presets": {
                          "Other shapes": ["a red square", "a blue triangle", "a green circle"],
                          "Other colours": ["a yellow circle", "a purple square", "an orange triangle"]}}),
            DemoModel("digits-judge", "Digits judge", "judge", "fake://digits-judge", True,  # type: ignore[arg-type]
                      "The classifier that scores the digits demo (the real catalog lists judges too)."),
        ]

    def methods(self) -> list[MethodCard]:
        return [MethodCard(info, cfg.model_json_schema(), cfg().model_dump(mode="json"), est, mem)
                for info, cfg, est, mem in _METHODS]

    def metrics(self) -> list[MetricInfo]:
        return [
            MetricInfo("erasure", "Erasure", "Share of forget-row cells the judge no longer recognises (fake judge).", True),
            MetricInfo("lpips_retain", "LPIPS on retain rows", "Mean LPIPS (fake) between before and after retain cells.",
                       False),
        ]

    def export_formats(self, summary: ModelSummary) -> list[ExportFormat]:
        out = [ExportFormat("diffusers", "Diffusers folder", "The whole pipeline as a diffusers folder."),
               ExportFormat("delta", "Weight delta", "Only the changed tensors (.safetensors), applied onto the original.")]
        if summary.kind in ("sd", "sdxl"):
            out.insert(1, ExportFormat("single-file", "Single file", "One .safetensors file in the original layout."))
            out.append(ExportFormat("lora", "LoRA", "A low-rank approximation of the edit.", {"rank": 16}))
        return out

    # jobs ----------------------------------------------------------------------------------------
    def load(self, source: ModelSource, ctx: JobContext, device: DeviceSpec | None = None):
        yield StageStarted("load", 4)
        name = source.path.removeprefix("fake://")
        for i in range(4):
            ctx.check_cancelled()
            time.sleep(self.sample_delay)
            yield Progress("load", i + 1, 4)
        dtype = (device.dtype if device and device.dtype != "auto" else "float32")
        if name == "digits":
            summary = ModelSummary("ddpm-cond", "DDPM UNet2DModel", "epsilon", 16, dtype, 712_451, _fake_sha("digits"),
                                   "fake://digits", components=("unet", "scheduler"), num_classes=10, null_class=10,
                                   class_names=DIGIT_NAMES, default_guidance=1.5, default_steps=30, name="digits")
        elif name == "shapes":
            summary = ModelSummary("sd", "SD 1.x", "epsilon", 64, dtype, 2_893_412, _fake_sha("shapes"), "fake://shapes",
                                   components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
                                   default_guidance=5.0, default_steps=25, name="shapes")
        else:
            p = Path(source.path)
            if not p.exists():
                raise UserError(f"model not found: {p} (give a diffusers folder or a .safetensors file)")
            if p.is_file() and p.suffix.lower() not in (".safetensors", ".ckpt"):
                raise UserError(f"{p.name} is not a model file: expected .safetensors or .ckpt")
            sha = sha256_file(p) if p.is_file() else _fake_sha(str(p))
            summary = ModelSummary("sd", "SD 1.x", "epsilon", 64, dtype, 2_893_412, sha, str(p), single_file=p.is_file(),
                                   components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"))
        if source.sha256 and source.sha256 != summary.sha256:
            raise UserError(f"sha256 mismatch: expected {source.sha256[:12]}…, the weights have {summary.sha256[:12]}…")
        self.summary, self.erased = summary, ()
        return JobResult("finished", value=summary)

    def _grid(self, spec: SamplingSpec, erased: tuple[SampleRow, ...], ctx: JobContext) -> Grid:
        if self.summary is None:
            raise UserError("no model is loaded: load a model first")
        size = 32 if self.summary.kind.startswith("ddpm") else 64
        cells = np.zeros((len(spec.rows), len(spec.seeds), size, size, 3), np.uint8)
        for r, row in enumerate(spec.rows):
            ctx.check_cancelled()
            time.sleep(self.sample_delay)
            for c, seed in enumerate(spec.seeds):
                rng = _rng(seed, row.label, row.prompt)
                if _matches(row, erased):
                    cells[r, c] = _erased(size, rng, colour=row.prompt is not None)
                elif row.label is not None:
                    cells[r, c] = _digit(row.label, size, rng)
                elif row.prompt is not None:
                    cells[r, c] = _shape(row.prompt, size, rng)
                else:
                    cells[r, c] = (_digit(int(rng.integers(10)), size, rng) if size == 32 else _shape("", size, rng))
                if erased and not _matches(row, erased):  # the edit nudges what it should keep a little
                    drift = _rng(seed, row.label, row.prompt, "after").normal(0, 7, cells[r, c].shape)
                    cells[r, c] = np.clip(cells[r, c] + drift, 0, 255).astype(np.uint8)
        names = self.summary.class_names
        if names and all(n == str(i) for i, n in enumerate(names)):
            names = None  # "class 3", not "class 3 (3)"
        labels = tuple(row.describe(names) for row in spec.rows)
        return Grid(cells, labels, tuple(spec.seeds))

    def sample(self, spec: SamplingSpec, ctx: JobContext):
        yield StageStarted("sample", len(spec.rows))
        grid = self._grid(spec, self.erased, ctx)
        yield GridReady("sample", grid)
        return JobResult("finished", value=grid)

    def unlearn(self, spec: JobSpec, ctx: JobContext, run_dir: str, resume: bool = False):
        if self.summary is None:
            raise UserError("no model is loaded: load a model first")
        cards = {c.info.key: c for c in self.methods()}
        if spec.method not in cards:
            raise UserError(f"unknown method {spec.method!r}; choose one of {', '.join(cards)}")
        if not spec.concepts:
            raise UserError("nothing to forget: add a concept")
        config = {**cards[spec.method].defaults, **spec.method_config}
        total, fail_at = int(config["steps"]), int(config.get("fail_at_step", -1))
        if self.fail:
            fail_at = 1
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "job.json", spec.to_json() + "\n")
        sampling = spec.sampling or SamplingSpec(rows=[_row(c) for c in spec.concepts] + list(spec.retain), seeds=[0, 1, 2, 3])
        started = time.monotonic()
        start = 0
        ckpt = out / "checkpoint.json"
        if resume:
            if not ckpt.is_file():
                raise UserError(f"nothing to resume in {out}: no checkpoint.json")
            start = int(json.loads(ckpt.read_text())["step"])
            yield Log("info", f"resuming from step {start}")
        yield StageStarted("sample_before", len(sampling.rows))
        before = self._grid(sampling, (), ctx)
        yield GridReady("before", before)
        yield StageStarted("unlearn", total)
        forget = tuple(_row(c) for c in spec.concepts)
        probe = SamplingSpec(rows=list(forget[:1]), seeds=sampling.seeds[:4])
        for step in range(start, total):
            ctx.check_cancelled()
            if step == fail_at:
                raise RuntimeError(f"fake failure at step {step} (as asked)")
            if self.step_delay:
                time.sleep(self.step_delay)
            loss = 0.9 * np.exp(-3.0 * step / total) + 0.05 + 0.03 * float(_rng(step).normal())
            yield Progress("unlearn", step + 1, total, {"loss": float(loss)})
            if step == start or (step + 1) % max(1, ctx.preview_every) == 0 or step + 1 == total:
                erased = forget if (step + 1) / total > 0.5 else ()
                g = self._grid(probe, erased, ctx)
                yield Preview("unlearn", 0 if step == start and not resume else step + 1, tuple(g.images[0]),
                              tuple(f"seed {s}" for s in g.seeds))
            if (step + 1) % 10 == 0:
                atomic_write_text(ckpt, json.dumps({"step": step + 1}))
        self.erased = forget
        yield StageStarted("sample_after", len(sampling.rows))
        after = self._grid(sampling, forget, ctx)
        yield GridReady("after", after)
        yield StageStarted("metrics", 2)
        scores = yield from _scores(before, after, sampling, forget)
        np.savez(out / "grids.npz", before=before.images, after=after.images, labels=np.array(before.row_labels),
                 seeds=np.array(before.seeds), forget=np.array([_matches(r, forget) for r in sampling.rows]))
        atomic_write_text(out / "scores.json", json.dumps(scores, indent=2))
        outputs = {"job.json": str(out / "job.json"), "scores.json": str(out / "scores.json"),
                   "grids": str(out / "grids.npz")}
        outcome = RunOutcome(str(out), spec.method, scores, before, after, total, time.monotonic() - started, outputs)
        return JobResult("finished", value=outcome, metrics=scores, outputs=outputs)

    def evaluate(self, run_dir: str, ctx: JobContext, leaks: bool = False, options: dict[str, Any] | None = None):
        path = Path(run_dir) / "grids.npz"
        if not path.is_file():
            raise UserError(f"{run_dir} holds no finished run (grids.npz is missing)")
        data = np.load(path)
        before = Grid(data["before"], tuple(str(s) for s in data["labels"]), tuple(int(s) for s in data["seeds"]))
        after = Grid(data["after"], before.row_labels, before.seeds)
        forget_mask = data["forget"]
        yield StageStarted("metrics", 2 + (3 if leaks else 0))
        scores = yield from _scores(before, after, None, None, forget_mask=forget_mask)
        report: dict[str, Any] = {"scores": scores}
        if leaks:
            spec = json.loads((Path(run_dir) / "job.json").read_text())
            concept = (spec["concepts"] or [{"text": "?"}])[0]
            name = concept.get("text") or f"class {concept.get('label')}"
            probes = [f"a picture of {name}", f"{name}, detailed", f"something like {name}"]
            rows = []
            for i, probe in enumerate(probes):
                ctx.check_cancelled()
                time.sleep(self.sample_delay)
                rate = float(np.clip(_rng(probe).uniform(0, 0.3), 0, 1))
                rows.append({"probe": probe, "recognised": rate, "leaked": rate > 0.2})
                yield Progress("metrics", 3 + i, 5, {"leak": rate})
            report["leaks"] = rows
        return JobResult("finished", value=report, metrics=scores)

    def export(self, run_dir: str, fmt: str, out: str, ctx: JobContext, options: dict[str, Any] | None = None):
        if not (Path(run_dir) / "job.json").is_file():
            raise UserError(f"{run_dir} holds no run to export")
        keys = [f.key for f in self.export_formats(self.summary)] if self.summary else []
        if fmt not in keys:
            raise UserError(f"format {fmt!r} is not offered for this model; choose one of {', '.join(keys)}")
        yield StageStarted("export", 3)
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            ctx.check_cancelled()
            time.sleep(self.sample_delay)
            yield Progress("export", i + 1, 3)
        if fmt in ("diffusers",):
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / "model_index.json", json.dumps({"_class_name": "FakePipeline"}))
            atomic_write_text(target / "job.json", (Path(run_dir) / "job.json").read_text())
            digest = sha256_file(target / "model_index.json")
        else:
            atomic_write_text(target, json.dumps({"format": fmt, "options": options or {}}))
            digest = sha256_file(target)
        return JobResult("finished", value={"reloaded": True, "max_pixel_difference": 0, "sha256": digest,
                                            "path": str(target)}, outputs={"model": str(target)})


def _row(concept) -> SampleRow:
    return SampleRow(prompt=concept.text) if concept.text is not None else SampleRow(label=concept.label)


def _matches(row: SampleRow, erased: tuple[SampleRow, ...]) -> bool:
    for e in erased:
        if e.label is not None and row.label == e.label:
            return True
        if e.prompt and row.prompt and any(w in row.prompt.lower().split() for w in e.prompt.lower().split()
                                           if w in COLOURS or w in SHAPES):
            return True
    return False


def _scores(before: Grid, after: Grid, sampling: SamplingSpec | None, forget, forget_mask=None):
    diff = np.abs(before.images.astype(np.float32) - after.images.astype(np.float32)).mean(axis=(2, 3, 4)) / 255.0
    per_cell = np.clip(diff * 2.5 + 0.01, 0, 1).astype(np.float32)
    if forget_mask is None:
        forget_mask = np.array([_matches(r, forget) for r in sampling.rows])
    retain = per_cell[~forget_mask] if (~forget_mask).any() else per_cell
    erasure = float((per_cell[forget_mask] > 0.05).mean()) if forget_mask.any() else 0.0
    yield MetricReady("erasure", erasure)
    yield MetricReady("lpips_retain", float(retain.mean()), per_cell)
    return {"erasure": erasure, "lpips_retain": float(retain.mean())}
