"""Loading and same-seed sampling of a tiny Stable Diffusion folder."""

import numpy as np
import pytest

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.spec import (
    CancelToken,
    JobCancelled,
    JobContext,
    ModelSource,
    Progress,
    SamplingSpec,
    UserError,
    run_blocking,
)
from concept_eraser.spec.files import sha256_file

from .tiny_sd import make_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd"), prediction_type="v_prediction")


def _spec(**kw):
    return SamplingSpec(**{"rows": [{"prompt": "a red circle"}, {"prompt": "a blue dog"}, {}], "seeds": [0, 3],
                           "steps": 2, "guidance": 3.0, **kw})


def test_summary(tiny_sd):
    b = load_model(ModelSource(path=str(tiny_sd)))
    s = b.summary
    assert (s.kind, s.prediction_type, s.resolution, s.channels) == ("sd", "v_prediction", 16, 3)
    assert s.parameters == sum(p.numel() for m in (b.unet, b.vae, b.text_encoder) for p in m.parameters())
    assert s.components == ("unet", "vae", "text_encoder") and not s.single_file
    assert s.sha256 == load_model(str(tiny_sd)).summary.sha256


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_same_seed_grid_is_reproducible(tiny_sd, scheduler):
    b = load_model(str(tiny_sd))
    before = {f: sha256_file(f) for f in tiny_sd.rglob("*") if f.is_file()}
    a = run_blocking(sample_grid(b, _spec(scheduler=scheduler), JobContext()))
    c = run_blocking(sample_grid(b, _spec(scheduler=scheduler), JobContext()))
    assert a.images.shape == (3, 2, 16, 16, 3)
    assert np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images[0, 0], a.images[1, 0])
    assert b.pipe.scheduler.__class__.__name__ == "DDIMScheduler", "the loaded pipeline's scheduler is untouched"
    assert before == {f: sha256_file(f) for f in tiny_sd.rglob("*") if f.is_file()}, "model files were written"


def test_cancel_inside_the_pipeline(tiny_sd):
    b = load_model(str(tiny_sd))
    ctx = JobContext(cancel=CancelToken())
    ctx.cancel.cancel()
    with pytest.raises(JobCancelled):
        run_blocking(sample_grid(b, _spec(steps=5), ctx), lambda e: isinstance(e, Progress))


def test_labels_are_refused_for_text_models(tiny_sd):
    with pytest.raises(UserError, match="no class labels"):
        run_blocking(sample_grid(load_model(str(tiny_sd)), SamplingSpec(rows=[{"label": 1}], seeds=[0]),
                                 JobContext()))


def test_missing_component_is_named(tiny_sd, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(UserError, match=r"the unet is missing: expected .*unet/config.json"):
        load_model(str(broken))


def test_not_a_model(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match="not a diffusers model folder"):
        load_model(str(tmp_path))
    with pytest.raises(UserError, match="model not found"):
        load_model(str(tmp_path / "nope"))
