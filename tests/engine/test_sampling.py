"""Same-seed sampling on tiny class-conditional and unconditional DDPMs built here."""

import numpy as np
import pytest
import torch

from concept_eraser.engine.bundle import ModelBundle
from concept_eraser.engine.sampling import sample_grid
from concept_eraser.spec import (
    CancelToken,
    JobContext,
    Progress,
    SampleRow,
    SamplingSpec,
    UserError,
    run_blocking,
)
from concept_eraser.spec.summary import ModelSummary


def _bundle(classes: int | None) -> ModelBundle:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=None if classes is None else classes + 1).eval()
    summary = ModelSummary(
        kind="ddpm" if classes is None else "ddpm-cond", architecture="test", prediction_type="epsilon",
        resolution=8, dtype="float32", parameters=1, sha256="0", source="test", channels=1,
        num_classes=classes, null_class=classes, default_guidance=2.0,
    )
    return ModelBundle(summary=summary, unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))


@pytest.fixture(scope="module")
def cond():
    return _bundle(3)


def _grid(bundle, **kw):
    spec = SamplingSpec(**{"rows": [{"label": 0}, {"label": 2}, {}], "seeds": [0, 1, 5], "steps": 3, **kw})
    return run_blocking(sample_grid(bundle, spec, JobContext()))


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler", "dpm++"])
def test_identical_inputs_give_identical_pixels(cond, scheduler):
    a = _grid(cond, scheduler=scheduler)
    b = _grid(cond, scheduler=scheduler)
    assert a.images.shape == (3, 3, 8, 8, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert a.row_labels == ("class 0", "class 2", "unconditional")
    assert a.images.std() > 0


def test_cell_depends_only_on_its_row_and_seed(cond):
    """A fresh generator per cell: a cell's pixels do not change with the other cells or the batching."""
    full = _grid(cond, scheduler="ddpm", batch_size=4)
    alone = run_blocking(sample_grid(cond, SamplingSpec(rows=[{"label": 2}], seeds=[5], steps=3, scheduler="ddpm"),
                                     JobContext()))
    diff = np.abs(full.images[1, 2].astype(int) - alone.images[0, 0].astype(int)).max()
    assert diff <= 1  # batch size may change float rounding in the last bit, never the content
    assert not np.array_equal(full.images[0, 0], full.images[0, 1]), "different seeds must differ"
    assert not np.array_equal(full.images[0, 0], full.images[1, 0]), "different classes must differ"


def test_large_latents_run_fewer_cells_per_pass():
    from types import SimpleNamespace

    from concept_eraser.engine.sampling import cells_per_pass

    def fake(channels, size, resolution):
        return SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(in_channels=channels, sample_size=size)),
                               summary=SimpleNamespace(resolution=resolution))

    spec = SamplingSpec(rows=[{}], seeds=[0], batch_size=64)
    assert cells_per_pass(fake(1, 16, 16), spec) == 64  # the digits demo keeps the spec's batch
    assert cells_per_pass(fake(4, 64, 512), spec) == 16  # SD 1.x at 512 px
    assert cells_per_pass(fake(4, 128, 1024), spec) == 4  # SDXL at 1024 px
    assert cells_per_pass(fake(4, 64, 512), spec.model_copy(update={"height": 1024, "width": 1024})) == 4
    assert cells_per_pass(fake(4, 64, 512), spec.model_copy(update={"batch_size": 8})) == 8


def test_capped_passes_keep_pixels(cond, monkeypatch):
    import concept_eraser.engine.sampling as sampling

    whole = _grid(cond, scheduler="ddpm", batch_size=9)
    monkeypatch.setattr(sampling, "MAX_PASS_ELEMENTS", 2 * 8 * 8)  # two 1×8×8 cells per pass
    steps = []
    spec = SamplingSpec(rows=[{"label": 0}, {"label": 2}, {}], seeds=[0, 1, 5], steps=3, scheduler="ddpm",
                        batch_size=9)
    split = run_blocking(sample_grid(cond, spec, JobContext()),
                         lambda e: steps.append(e.total) if isinstance(e, Progress) else None)
    assert set(steps) == {5 * 3}  # 9 cells in 5 passes of at most 2, 3 steps each
    assert np.abs(whole.images.astype(int) - split.images.astype(int)).max() <= 1


def test_guidance_changes_conditional_rows_only(cond):
    a = _grid(cond, guidance=1.0)
    b = _grid(cond, guidance=4.0)
    assert not np.array_equal(a.images[0], b.images[0])
    assert np.array_equal(a.images[2], b.images[2]), "unconditional rows take no guidance"


def test_cancel_within_one_denoising_step(cond):
    ctx = JobContext(cancel=CancelToken())
    seen = []

    def on_event(e):
        if isinstance(e, Progress):
            seen.append(e.step)
            if e.step == 2:
                ctx.cancel.cancel()

    spec = SamplingSpec(rows=[{"label": 0}], seeds=[0], steps=10)
    from concept_eraser.spec import JobCancelled

    with pytest.raises(JobCancelled):
        run_blocking(sample_grid(cond, spec, ctx), on_event)
    assert seen == [1, 2]


def test_rows_that_do_not_fit_the_model_are_refused():
    uncond = _bundle(None)
    with pytest.raises(UserError, match="no class labels"):
        run_blocking(sample_grid(uncond, SamplingSpec(rows=[{"label": 1}], seeds=[0], steps=2), JobContext()))
    with pytest.raises(UserError, match="classes 0-2"):
        run_blocking(sample_grid(_bundle(3), SamplingSpec(rows=[{"label": 7}], seeds=[0], steps=2), JobContext()))
    with pytest.raises(UserError, match="no text prompts"):
        run_blocking(sample_grid(uncond, SamplingSpec(rows=[SampleRow(prompt="a cat")], seeds=[0], steps=2),
                                 JobContext()))
    g = run_blocking(sample_grid(uncond, SamplingSpec(rows=[{}], seeds=[0, 1], steps=2), JobContext()))
    assert g.shape == (1, 2)
