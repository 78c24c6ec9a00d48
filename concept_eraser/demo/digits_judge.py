"""digits-judge: a small CNN that tells which digit an image shows (16x16, real scikit-learn digits).

Trained with shifts, blur and noise so that it judges generated samples as well as real ones.
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

from .digits_data import CLASS_NAMES, SIZE, from_uint8_rgb, load_digits_tensor, split_indices

JUDGE_FILE = "digits-judge.safetensors"


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 32, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * width, n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (used for judge-feature FID)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    # random shifts of up to 2 px and small scale changes through an affine grid
    theta = torch.zeros(n, 2, 3)
    scale = 1 + (torch.rand(n, generator=g) - 0.5) * 0.2
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.5
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.3
    x = torch.where(blur, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1), x)
    x = x + torch.randn(x.shape, generator=g) * 0.05 * torch.rand(n, 1, 1, 1, generator=g)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    return (x * contrast).clamp(0, 1)


def build_digits_judge(out_path: Path | None = None, seed: int = 0, ctx: JobContext | None = None, epochs: int = 60):
    """Train and save the judge; yields Progress, returns {held_out_accuracy, seconds, path}."""
    ctx = ctx or JobContext()
    out_path = Path(out_path or judges_dir() / JUDGE_FILE)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_digits_tensor()
    train_idx, test_idx = split_indices(len(x), seed=0)
    xtr, ytr = x[train_idx], y[train_idx]
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(xtr) + 127) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    yield StageStarted("train", total=epochs)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(xtr), 128):
            ctx.check_cancelled()
            idx = perm[i : i + 128]
            loss = F.cross_entropy(model(_augment(xtr[idx], g)), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        yield Progress("train", epoch + 1, epochs, {"loss": total / len(xtr)})
    model.eval()
    with torch.no_grad():
        acc = (model(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
    meta = {"concept_eraser.judge": json.dumps({"classes": list(CLASS_NAMES), "size": SIZE, "held_out_accuracy": acc,
                                                 "seed": seed, "epochs": epochs})}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_path, lambda p: save_file(state, str(p), metadata=meta))
    return {"held_out_accuracy": acc, "seconds": time.perf_counter() - t0, "path": str(out_path)}


class DigitsJudge:
    """Loaded judge: predict digits of uint8 images (any size, RGB or grey)."""

    def __init__(self, model: DigitsCNN, meta: dict) -> None:
        self.model = model.eval()
        self.meta = meta
        self.class_names = tuple(meta["classes"])
        self.size = int(meta["size"])

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch: int = 512) -> np.ndarray:
        x = from_uint8_rgb(images, self.size)
        out = [F.softmax(self.model(x[i : i + batch]), -1) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities(images).argmax(-1)

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        return self.model.embed(from_uint8_rgb(images, self.size)).numpy()


def load_digits_judge(path: Path | None = None) -> DigitsJudge:
    path = Path(path or judges_dir() / JUDGE_FILE)
    if not path.is_file():
        raise UserError(f"digits judge not found at {path}; rebuild it with: concept-eraser demo build digits-judge")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["concept_eraser.judge"])
    model = DigitsCNN()
    model.load_state_dict(load_file(str(path)))
    return DigitsJudge(model, meta)
