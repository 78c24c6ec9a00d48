"""Diffusion-classifier concept score on the shapes demo: striped images score positive for "striped"
vs "solid", solid images negative (the original model as judge; few images, 5 timesteps)."""

import numpy as np
import pytest

from concept_eraser.metrics.diffusion_classifier import anchor_prompt, diffusion_classifier, spread_timesteps
from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, UserError, run_blocking


@pytest.fixture(scope="module")
def striped_and_solid(shapes_bundle):
    from concept_eraser.engine.sampling import sample_grid

    prompts = ["a red striped circle", "a blue striped square", "a red solid circle", "a blue solid square"]
    spec = SamplingSpec(rows=[SampleRow(prompt=p) for p in prompts], seeds=[0, 1, 2], steps=25, batch_size=64)
    grid = run_blocking(sample_grid(shapes_bundle, spec, JobContext()))
    images = np.asarray(grid.images)
    return images[:2].reshape(-1, 32, 32, 3), images[2:].reshape(-1, 32, 32, 3)


def test_sign_follows_the_concept(shapes_bundle, striped_and_solid):
    striped, solid = striped_and_solid
    a = diffusion_classifier(shapes_bundle, striped, "striped", "solid", timesteps=5)
    b = diffusion_classifier(shapes_bundle, solid, "striped", "solid", timesteps=5)
    assert a.mean > 0 and a.win_rate >= 5 / 6, a.per_image
    assert b.mean < 0 and b.win_rate <= 1 / 6, b.per_image
    assert a.per_image.shape == (6,) and a.timesteps == (100, 300, 500, 700, 900)
    assert "5 timesteps" in a.description and "6 images" in a.description


def test_in_context_prompts_and_determinism(shapes_bundle, striped_and_solid):
    striped, _ = striped_and_solid
    prompts = ["a red striped circle"] * 3 + ["a blue striped square"] * 3
    r1 = diffusion_classifier(shapes_bundle, striped, "striped", "solid", prompts=prompts, timesteps=5, batch=4)
    r2 = diffusion_classifier(shapes_bundle, striped, "striped", "solid", prompts=prompts, timesteps=5, batch=64)
    assert r1.mean > 0 and np.allclose(r1.per_image, r2.per_image, atol=1e-5)


def test_helpers_and_refusals(shapes_bundle, digits_bundle):
    assert anchor_prompt("a red striped circle", "striped", "solid") == "a red solid circle"
    assert anchor_prompt("a red striped circle", "striped", "") == "a red circle"
    assert spread_timesteps(3) == (100, 500, 900)
    with pytest.raises(ValueError, match="does not contain"):
        diffusion_classifier(shapes_bundle, np.zeros((1, 32, 32, 3), np.uint8), "striped", prompts=["a red circle"])
    with pytest.raises(UserError, match="Stable Diffusion"):
        diffusion_classifier(digits_bundle, np.zeros((1, 16, 16, 3), np.uint8), "3")
