"""Fast checks of the shipped digits demo model (the full table: concept-eraser demo quality digits)."""

import numpy as np
import pytest

from concept_eraser.demo.digits_judge import load_digits_judge
from concept_eraser.engine.loading import load_model
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


def test_summary(digits):
    s = digits.summary
    assert (s.kind, s.num_classes, s.null_class, s.resolution, s.channels) == ("ddpm-cond", 10, 10, 16, 1)
    assert s.class_names == tuple(str(i) for i in range(10))
    assert len(s.sha256) == 64


def test_conditional_samples_show_their_class(digits):
    judge = load_digits_judge()
    spec = SamplingSpec(rows=[SampleRow(label=c) for c in range(10)], seeds=list(range(1000, 1012)), steps=20,
                        batch_size=120)
    grid = run_blocking(sample_grid(digits, spec, JobContext()))
    pred = np.stack([judge.predict(grid.images[c]) for c in range(10)])
    acc = (pred == np.arange(10)[:, None]).mean()
    assert acc >= 0.85, f"judged accuracy {acc:.2f}"
    assert min((pred[c] == c).mean() for c in range(10)) >= 0.5


def test_unconditional_samples_cover_the_classes(digits):
    judge = load_digits_judge()
    spec = SamplingSpec(rows=[SampleRow()], seeds=list(range(2000, 2120)), steps=20, batch_size=120)
    grid = run_blocking(sample_grid(digits, spec, JobContext()))
    shares = np.bincount(judge.predict(grid.images[0]), minlength=10) / 120
    assert (shares > 0).sum() >= 9, shares
    assert shares.max() <= 0.3, shares
