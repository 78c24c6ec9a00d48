"""Shared fixtures: the bundled demo models and small same-seed grids of their evaluation plans."""

from __future__ import annotations

import pytest

from concept_eraser.spec import Concept, JobContext, SamplingSpec, run_blocking


def sample_plan(bundle, plan, steps=None):
    from concept_eraser.engine.sampling import sample_grid

    spec = SamplingSpec(rows=plan.rows, seeds=plan.seeds, steps=steps or bundle.summary.default_steps,
                        batch_size=256)
    return run_blocking(sample_grid(bundle, spec, JobContext()))


@pytest.fixture(scope="session")
def shapes_bundle():
    from concept_eraser.engine.loading import load_model

    return load_model("shapes")


@pytest.fixture(scope="session")
def digits_bundle():
    from concept_eraser.engine.loading import load_model

    return load_model("digits")


@pytest.fixture(scope="session")
def digits_case(digits_bundle):
    """Plan to forget class 3 and the original model's grid: 11 rows x 5 seeds."""
    from concept_eraser.metrics.judged import demo_eval_plan

    plan = demo_eval_plan("digits", [Concept(label=3)], samples=5, seed0=1000)
    return plan, sample_plan(digits_bundle, plan)


@pytest.fixture(scope="session")
def shapes_case(shapes_bundle):
    """Plan to forget "striped" and the original model's grid: 12 prompts x 8 seeds."""
    from concept_eraser.metrics.judged import demo_eval_plan

    plan = demo_eval_plan("shapes", [Concept(text="striped")], samples=8, seed0=1000)
    return plan, sample_plan(shapes_bundle, plan)
