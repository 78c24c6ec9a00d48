import numpy as np

from concept_eraser.demo.digits_data import load_digits_tensor, split_indices, to_uint8_rgb
from concept_eraser.demo.digits_judge import load_digits_judge


def test_shipped_judge_scores_held_out_real_digits():
    judge = load_digits_judge()
    x, y = load_digits_tensor()
    _, test_idx = split_indices(len(x), seed=0)
    pred = judge.predict(to_uint8_rgb(x[test_idx]))
    acc = float((pred == y[test_idx].numpy()).mean())
    assert acc >= 0.97, acc
    assert judge.class_names == tuple(str(i) for i in range(10))


def test_judge_accepts_other_sizes_and_is_not_constant():
    judge = load_digits_judge()
    x, y = load_digits_tensor(size=32)  # the judge resizes to its own input size
    pred = judge.predict(to_uint8_rgb(x[:200]))
    assert (pred == y[:200].numpy()).mean() > 0.9
    noise = np.random.default_rng(0).integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    assert judge.probabilities(noise).shape == (50, 10)
