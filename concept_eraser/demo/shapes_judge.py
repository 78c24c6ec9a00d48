"""shapes-judge: a small multi-head CNN that tells the shape, colour and texture of a 32x32 image.

Trained on procedurally drawn shapes (shapes_data) with augmentation that mimics what a generator
produces: small shifts and scale changes, blur, noise, brightness/contrast and slight per-channel
colour jitter. One `.safetensors` file; its metadata holds the class names per head and the input size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from concept_eraser.resources import judges_dir
from concept_eraser.spec.events import Progress, StageStarted
from concept_eraser.spec.files import atomic_write
from concept_eraser.spec.runloop import JobContext, UserError

from .shapes_data import HEADS, SIZE, make_dataset

JUDGE_FILE = "shapes-judge.safetensors"
META_KEY = "concept_eraser.judge"


def pick_device(ctx: JobContext) -> torch.device:
    """ctx.device, where "auto" means CUDA when present, else the CPU."""
    if ctx.device != "auto":
        return torch.device(ctx.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ShapesCNN(nn.Module):
    def __init__(self, heads: dict[str, int], width: int = 16) -> None:
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.features = nn.Sequential(
            *block(3, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), *block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, n) for k, n in heads.items()})

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (for judge-feature FID)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.dropout(self.features(x), 0.1, self.training)
        return {k: h(f) for k, h in self.heads.items()}


def to_tensor(images: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255.0  # a copy: grids are read-only
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    dev, x = x.device, x.cpu()
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    scale = 1 + (torch.rand(n, generator=g) - 0.5) * 0.16
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="border")
    k = torch.tensor([0.25, 0.5, 0.25])
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None]).expand(3, 1, 3, 3), groups=3)
    amount = torch.rand(n, 1, 1, 1, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.4)
    x = x + amount * (blurred - x)
    x = x + torch.randn(x.shape, generator=g) * 0.06 * torch.rand(n, 1, 1, 1, generator=g) ** 2
    contrast = 0.85 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    bright = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.12
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.1
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).mul(gain).clamp(0, 1).to(dev)


def build_shapes_judge(out_path: Path | None = None, seed: int = 0, ctx: JobContext | None = None,
                       n_train: int = 20000, n_test: int = 2400, epochs: int = 8, batch_size: int = 128):
    """Train and save the judge; yields Progress, returns {held_out_accuracy: {head: acc}, seconds, path}."""
    ctx = ctx or JobContext()
    out_path = Path(out_path or judges_dir() / JUDGE_FILE)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    yield StageStarted("data", total=None)
    xtr_np, ytr_np = make_dataset(n_train, seed=seed * 1000 + 1)
    xte_np, yte_np = make_dataset(n_test, seed=seed * 1000 + 2)
    xtr, ytr = to_tensor(xtr_np), torch.from_numpy(ytr_np)
    heads = {k: len(v) for k, v in HEADS.items()}
    device = pick_device(ctx)
    model = ShapesCNN(heads).to(device)
    ytr = ytr.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = -(-n_train // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    yield StageStarted("train", total=epochs)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n_train, generator=g)
        total = 0.0
        for i in range(0, n_train, batch_size):
            ctx.check_cancelled()
            idx = perm[i : i + batch_size]
            out = model(augment(xtr[idx], g).to(device))
            loss = sum(F.cross_entropy(out[k], ytr[idx, h], label_smoothing=0.05) for h, k in enumerate(heads))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        yield Progress("train", epoch + 1, epochs, {"loss": total / n_train})
    model = model.cpu().eval()
    judge = ShapesJudge(model, {"heads": {k: list(v) for k, v in HEADS.items()}, "size": SIZE})
    pred = judge.predict(xte_np)
    acc = {k: float((pred[k] == yte_np[:, h]).mean()) for h, k in enumerate(heads)}
    meta = {"heads": {k: list(v) for k, v in HEADS.items()}, "size": SIZE, "width": 16, "held_out_accuracy": acc,
            "held_out_images": n_test, "seed": seed, "device": str(device), "epochs": epochs, "train_images": n_train}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_path, lambda p: save_file(state, str(p), metadata={META_KEY: json.dumps(meta)}))
    return {"held_out_accuracy": acc, "seconds": time.perf_counter() - t0, "path": str(out_path)}


class ShapesJudge:
    """Loaded judge: predict(images) -> {"shape": idx, "colour": idx, "texture": idx} per image."""

    def __init__(self, model: ShapesCNN, meta: dict) -> None:
        self.model = model.eval()
        self.meta = meta
        self.class_names: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in meta["heads"].items()}
        self.heads = tuple(self.class_names)
        self.size = int(meta["size"])

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
        x = to_tensor(images, self.size)
        outs = [self.model(x[i : i + batch]) for i in range(0, len(x), batch)]
        return {k: torch.cat([F.softmax(o[k], -1) for o in outs]).numpy() for k in self.heads}

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {k: p.argmax(-1) for k, p in self.probabilities(images).items()}

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        return self.model.embed(to_tensor(images, self.size)).numpy()


def load_shapes_judge(path: Path | None = None) -> ShapesJudge:
    path = Path(path or judges_dir() / JUDGE_FILE)
    if not path.is_file():
        raise UserError(f"shapes judge not found at {path}; rebuild it with: concept-eraser demo build shapes-judge")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
    model = ShapesCNN({k: len(v) for k, v in meta["heads"].items()}, width=int(meta.get("width", 16)))
    model.load_state_dict(load_file(str(path)))
    return ShapesJudge(model, meta)
