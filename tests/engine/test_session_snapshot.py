"""Snapshot.restore puts back the edited weights and the bundle's meta (SFD marks its result one-step there)."""

import torch

from concept_eraser.engine.loading import load_model
from concept_eraser.engine.session import Snapshot


def test_restore_puts_back_weights_and_meta():
    bundle = load_model("digits")
    meta_before = dict(bundle.meta)
    w = bundle.unet.conv_out.weight
    w_before = w.detach().clone()
    snap = Snapshot.take(bundle, ["unet"])
    with torch.no_grad():
        w.add_(1.0)
    bundle.meta = {**bundle.meta, "one_step": {"t_init": 755, "sigma_init": 1.0}, "default_steps": 1}
    snap.restore(bundle)
    assert torch.equal(bundle.unet.conv_out.weight, w_before)
    assert bundle.meta == meta_before
    assert "one_step" not in bundle.meta
