"""Judge-feature FID: the Fréchet distance itself, then real vs real (small) and real vs noise (large)."""

import numpy as np
import pytest

from concept_eraser.metrics.judge_fid import frechet_distance, images_fid, real_images, retained_fid
from concept_eraser.metrics.judged import load_demo_judge


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(m, 4I): |m|^2 + 4 + 16 - 2 * 4 * 2 = |m|^2 + 4
    b = rng.normal(size=(4000, 4)) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(4 + 4, rel=0.1)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


@pytest.mark.parametrize("demo", ["digits", "shapes"])
def test_real_vs_real_is_small_and_real_vs_noise_large(demo):
    judge = load_demo_judge(demo)
    real = real_images(demo, 800, seed=1)
    half = images_fid(real[:400], real[400:], judge)
    size = real.shape[1]
    noise = np.random.default_rng(0).integers(0, 256, (400, size, size, 3), dtype=np.uint8)
    far = images_fid(noise, real[400:], judge)
    assert half.generated == 400 and "400 generated vs 400 real" in far.description
    assert far.value > 10 * half.value, (half.value, far.value)


def test_retained_fid_of_model_samples_is_near_real(shapes_case):
    plan, grid = shapes_case
    judge = load_demo_judge("shapes")
    r = retained_fid(plan, grid, judge)
    noise = np.random.default_rng(0).integers(0, 256, np.asarray(grid.images).shape, dtype=np.uint8)
    from concept_eraser.spec import Grid

    bad = retained_fid(plan, Grid(noise, grid.row_labels, grid.seeds), judge)
    assert r.generated == 8 * 8 and bad.value > 5 * r.value, (r.value, bad.value)


def test_agrees_with_torchmetrics_fid():
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x.flatten(1).float()

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(400, 8)) * 1.5 + 0.3
    ref = FrechetInceptionDistance(feature=Identity(), normalize=False)
    ref.update(torch.tensor(a).view(500, 8, 1, 1), real=True)
    ref.update(torch.tensor(b).view(400, 8, 1, 1), real=False)
    assert frechet_distance(b, a) == pytest.approx(ref.compute().item(), rel=1e-5)
