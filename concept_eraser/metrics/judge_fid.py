"""Judge-feature FID: the Fréchet distance between generated and real images in a judge's feature space.

Features are the demo judge's penultimate activations (`judge.features`, 64-d for both demo judges).
The reference images are real: scikit-learn digits (digits_data) or procedurally drawn shapes
(shapes_data.draw) with the same classes / attribute triples as the generated rows, so a model that
keeps its retained classes scores close to the real-vs-real level (FID has a positive bias that
shrinks with the sample count: compare numbers made with the same counts only).

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

computed in float64; the trace of the matrix square root uses the symmetric form and an
eigendecomposition (eigenvalues clipped at 0), which is stable for singular covariances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from concept_eraser.spec.events import Grid

KEY = "judge-fid"


@dataclass(frozen=True)
class FidResult:
    key: str
    value: float
    generated: int  # images on each side
    real: int
    description: str


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {f1.shape} and {f2.shape}")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross, 0.0))


def real_digits(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Real scikit-learn digits as uint8 RGB (16 px), one per requested label, drawn without replacement
    from each class's images as long as they last (about 180 per class)."""
    from concept_eraser.demo.digits_data import load_digits_tensor, to_uint8_rgb

    x, y = load_digits_tensor()
    y = y.numpy()
    rng = np.random.default_rng(seed)
    pick = []
    for k in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(y == k))
        n = int((labels == k).sum())
        pick.extend(pool[np.arange(n) % len(pool)])
    return to_uint8_rgb(x[np.asarray(pick)])


def real_shapes(triples: list[tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """Procedural shapes, one per requested (shape, colour, texture) index triple."""
    from concept_eraser.demo.shapes_data import ShapeAttrs, draw

    rng = np.random.default_rng(seed)
    return np.stack([draw(ShapeAttrs(*map(int, t)), rng) for t in triples])


def images_fid(generated: np.ndarray, real: np.ndarray, judge, name: str = "judge") -> FidResult:
    f_gen, f_real = judge.features(np.asarray(generated)), judge.features(np.asarray(real))
    desc = (f"Fréchet distance in {name} features ({f_gen.shape[1]}-d, judge input {judge.size} px), "
            f"{len(f_gen)} generated vs {len(f_real)} real images")
    return FidResult(KEY, frechet_distance(f_gen, f_real), len(f_gen), len(f_real), desc)


def retained_fid(plan, grid: Grid, judge=None, seed: int = 0) -> FidResult:
    """FID of a plan's retain rows (retained classes / prompts) against real images of the same classes."""
    from .judged import load_demo_judge

    judge = judge or load_demo_judge(plan.demo)
    rows = plan.rows_with("retain_in", "retain_cross")
    generated = np.concatenate([np.asarray(grid.images[r]) for r in rows])
    return images_fid(generated, retained_real(plan, seed), judge, f"{plan.demo}-judge")


def retained_real(plan, seed: int = 0) -> np.ndarray:
    """Real images matching a plan's retain rows: one per (retain row, seed), same class / attribute triple.
    Two calls with different seeds give the real-vs-real level of retained_fid at the same counts."""
    rows = plan.rows_with("retain_in", "retain_cross")
    if not rows:
        raise ValueError("the plan has no retain rows")
    n = len(plan.seeds)
    if plan.demo == "digits":
        return real_digits(np.repeat([plan.targets[r][0] for r in rows], n), seed)
    return real_shapes([plan.targets[r] for r in rows for _ in range(n)], seed)


def real_images(demo: str, n: int, seed: int = 0) -> np.ndarray:
    """n real images of a demo, all classes: scikit-learn digits (shuffled) or shapes_data.make_dataset."""
    if demo == "digits":
        from concept_eraser.demo.digits_data import load_digits_tensor, to_uint8_rgb

        x, _ = load_digits_tensor()
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        return to_uint8_rgb(x[idx])
    from concept_eraser.demo.shapes_data import make_dataset

    return make_dataset(n, seed=seed)[0]
