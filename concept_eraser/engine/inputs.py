"""Forget/retain inputs of an unlearn job: concepts, example images, an anchor, retain rows.

Example images come from files or folders (png/jpg/jpeg/webp/bmp/gif/tif), are converted to the
model's channel count, resized to its native size and scaled to [-1, 1]; every unreadable file is
named in one UserError line. Optionally the original model generates N images of each concept (and
of the anchor): they are cached per (model sha256, item, seeds, sampling) under the user cache dir
(`CONCEPT_ERASER_CACHE`, default ~/.cache/concept_eraser) so a second run does not pay for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator
from pathlib import Path

import numpy as np
import torch

from concept_eraser.spec.events import Event, Log
from concept_eraser.spec.jobspec import JobSpec, SampleRow, SamplingSpec
from concept_eraser.spec.runloop import JobContext, UserError, quiet

from .bundle import ModelBundle
from .denoise import CondItem
from .unlearn import ForgetInputs, concept_item

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_LISTED = 3


def cache_dir() -> Path:
    return Path(os.environ.get("CONCEPT_ERASER_CACHE") or Path.home() / ".cache" / "concept_eraser")


def image_files(paths: list[str]) -> list[Path]:
    """Files named directly plus the images inside named folders (sorted, not recursive)."""
    out: list[Path] = []
    missing = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            missing.append(str(p))
    if missing:
        raise UserError(f"forget images not found: {_names(missing)}")
    return out


def _names(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def load_images(files: list[Path], size: int, channels: int) -> torch.Tensor:
    """(N, C, size, size) float32 pixels in [-1, 1]; bad files are reported together by name."""
    from PIL import Image, UnidentifiedImageError

    arrays, bad = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (size, size):
                    im = _center_square(im).resize((size, size), Image.BICUBIC if im.width < size else Image.LANCZOS)
                a = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            bad.append(f.name)
            continue
        arrays.append(a[..., None] if a.ndim == 2 else a)
    if bad:
        raise UserError(f"cannot read {len(bad)} forget image(s): {_names(bad)} (not an image, or damaged)")
    if not arrays:
        raise UserError("no forget images were given")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def _center_square(im):
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def default_retain(bundle: ModelBundle, spec: JobSpec) -> list[SampleRow]:
    """Retain rows when the job names none: for class models every class that is not forgotten."""
    s = bundle.summary
    if spec.retain:
        return list(spec.retain)
    if s.conditioning == "class" and s.num_classes:
        gone = {c.label for c in spec.concepts} | ({spec.anchor.label} if spec.anchor else set())
        return [SampleRow(label=c) for c in range(s.num_classes) if c not in gone]
    return []


def generation_spec(bundle: ModelBundle, item: CondItem, n: int, seed0: int) -> SamplingSpec:
    s = bundle.summary
    row = SampleRow(label=item) if isinstance(item, int) else SampleRow(prompt=item) if item is not None else SampleRow()
    return SamplingSpec(rows=[row], seeds=list(range(seed0, seed0 + n)), steps=s.default_steps, batch_size=64)


def generate_images(bundle: ModelBundle, item: CondItem, n: int, ctx: JobContext, seed0: int = 0,
                    ) -> Generator[Event, None, torch.Tensor]:
    """n images of `item` from the loaded (original) model, cached on disk; (n, C, H, W) in [-1, 1]."""
    from .sampling import sample_grid

    spec = generation_spec(bundle, item, n, seed0)
    key = hashlib.sha256(json.dumps({"model": bundle.summary.sha256, "item": item, "spec": spec.model_dump(mode="json"),
                                     "dtype": str(bundle.dtype)}, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "generated" / f"{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path)
            yield Log("info", f"reusing {n} generated images of {item!r} from {path}")
        except (OSError, ValueError):
            arr = None
    else:
        arr = None
    if arr is None:
        yield Log("info", f"generating {n} images of {item!r} with the original model")
        grid = yield from quiet(sample_grid(bundle, spec, ctx))
        arr = grid.images[0]  # (n, H, W, 3) uint8
        try:
            from concept_eraser.spec.files import atomic_write

            def write(p: Path) -> None:
                with open(p, "wb") as f:
                    np.save(f, arr)

            atomic_write(path, write)
        except OSError as exc:
            yield Log("warning", f"could not cache generated images in {path.parent}: {exc}")
    x = torch.from_numpy(np.asarray(arr, dtype=np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0
    if bundle.summary.channels == 1:
        x = x[:, :1]
    return x


def resolve_inputs(bundle: ModelBundle, spec: JobSpec, ctx: JobContext, generate: int = 0,
                   ) -> Generator[Event, None, ForgetInputs]:
    """Everything the method reads: concepts, anchor, retain rows, and the example images (loaded from
    spec.forget_images, plus `generate` images per concept made by the original model)."""
    s = bundle.summary
    inputs = ForgetInputs(concepts=list(spec.concepts), anchor=spec.anchor, retain=default_retain(bundle, spec))
    images: list[torch.Tensor] = []
    items: list[CondItem] = []
    default_item = concept_item(spec.concepts[0]) if spec.concepts else None
    if spec.forget_images:
        files = image_files([f.path for f in spec.forget_images])
        x = load_images(files, s.resolution, s.channels)
        images.append(x)
        items += [default_item] * len(x)
        yield Log("info", f"{len(x)} forget images at {s.resolution}x{s.resolution}")
    if generate:
        if not spec.concepts:
            raise UserError("generating forget images needs a concept: give --forget")
        for c in spec.concepts:
            x = yield from generate_images(bundle, concept_item(c), generate, ctx, seed0=spec.seed)
            images.append(x)
            items += [concept_item(c)] * len(x)
    if images:
        inputs.images = torch.cat(images)
        inputs.image_items = items
    return inputs


def generate_anchor_images(bundle: ModelBundle, inputs: ForgetInputs, n: int, ctx: JobContext, seed0: int = 0,
                           ) -> Generator[Event, None, torch.Tensor]:
    """n images of the anchor concept from the original model (cached like forget images)."""
    if inputs.anchor is None:
        raise UserError("no anchor concept was given: give --anchor")
    return (yield from generate_images(bundle, inputs.anchor_item, n, ctx, seed0=seed0))
