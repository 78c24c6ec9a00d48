"""The demo build commands produce loadable models (a few steps each; the real builds take minutes)."""

from concept_eraser.demo.digits import build_digits
from concept_eraser.demo.shapes import build_shapes
from concept_eraser.engine.loading import load_model
from concept_eraser.spec import run_blocking


def test_digits_recipe_builds_a_loadable_class_conditional_model(tmp_path):
    out = tmp_path / "new" / "digits"
    result = run_blocking(build_digits(out_dir=out, steps=2, batch_size=8))
    assert result["path"] == str(out)
    s = load_model(str(out)).summary
    assert (s.kind, s.num_classes, s.null_class) == ("ddpm-cond", 10, 10)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_shapes_recipe_builds_a_loadable_sd(tmp_path):
    out = tmp_path / "new" / "shapes"
    run_blocking(build_shapes(out_dir=out, images=48, vae_steps=2, vae_batch=8, unet_steps=2, batch_size=8))
    s = load_model(str(out)).summary
    assert (s.kind, s.resolution) == ("sd", 32)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
