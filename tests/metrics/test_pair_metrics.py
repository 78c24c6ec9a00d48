"""LPIPS retention (real loading path, with an AlexNet-shaped weights file made here) and SSIM distance."""

import numpy as np
import pytest
import torch

from concept_eraser.metrics.lpips_retention import ALEXNET_FILE, ENV_VAR, lpips_retention
from concept_eraser.metrics.ssim_distance import ssim_distance
from concept_eraser.spec import Grid


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """Random tensors under torchvision AlexNet's trunk keys (the classifier is not used by LPIPS)."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("hub") / ALEXNET_FILE
    torch.save(state, path)
    return path


def _grids(rows=3, cols=4, size=32):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (rows, cols, size, size, 3), dtype=np.uint8)
    b = a.copy()
    b[1:, :, 8:24, 8:24] = 255 - b[1:, :, 8:24, 8:24]  # rows 1 and 2 change, row 0 stays
    labels = tuple(f"p{i}" for i in range(rows))
    return Grid(a, labels, tuple(range(cols))), Grid(b, labels, tuple(range(cols)))


def test_lpips_identical_grids_give_exactly_zero(alexnet_file):
    a, _ = _grids()
    r = lpips_retention(a, a, weights=alexnet_file)
    assert r.ok and r.mean == 0.0 and r.size == 64 and r.cells == 12
    assert r.per_cell.shape == (3, 4) and np.all(r.per_cell == 0)
    assert "AlexNet" in r.description and "64 px" in r.description


def test_lpips_differences_per_row_and_cell(alexnet_file):
    a, b = _grids()
    r = lpips_retention(a, b, rows=[0, 2], weights=alexnet_file)
    assert r.per_cell.shape == (3, 4)
    assert np.all(np.isnan(r.per_cell[1])), "rows not evaluated are NaN in the heat map"
    assert np.all(r.per_cell[0] == 0) and np.all(r.per_cell[2] > 0)
    assert set(r.per_row) == {"p0", "p2"} and r.per_row["p0"] == 0 and r.per_row["p2"] > 0
    assert r.mean == pytest.approx(np.nanmean(r.per_cell)) and r.mean > 0
    assert r.event().key == "lpips" and r.event().per_cell is r.per_cell


def test_lpips_weights_from_env_var(alexnet_file, monkeypatch):
    a, b = _grids()
    monkeypatch.setenv(ENV_VAR, str(alexnet_file))
    assert lpips_retention(a, b).ok


def test_lpips_unavailable_names_the_file(tmp_path, monkeypatch):
    a, b = _grids()
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    r = lpips_retention(a, b)
    assert r.status == "unavailable" and not r.ok and np.isnan(r.mean) and r.per_cell is None
    assert ALEXNET_FILE in r.message and str(tmp_path / "hub" / "checkpoints") in r.message and ENV_VAR in r.message


def test_lpips_rejects_a_file_that_is_not_alexnet(tmp_path):
    a, b = _grids()
    bad = tmp_path / ALEXNET_FILE
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ValueError, match="not a torchvision AlexNet"):
        lpips_retention(a, b, weights=bad)


def test_ssim_distance_zero_and_positive():
    a, b = _grids()
    same = ssim_distance(a, a)
    assert same.ok and same.key == "ssim-distance" and same.mean == pytest.approx(0.0, abs=1e-6)
    diff = ssim_distance(a, b)
    assert diff.per_cell.shape == (3, 4)
    assert np.allclose(diff.per_cell[0], 0, atol=1e-6) and np.all(diff.per_cell[1:] > 0.01)
    assert set(diff.per_row) == {"p0", "p1", "p2"}


def test_pairs_must_share_rows_and_seeds():
    a, b = _grids()
    other = Grid(np.asarray(b.images), b.row_labels, (9, 8, 7, 6))
    with pytest.raises(ValueError, match="same rows and seeds"):
        ssim_distance(a, other)


def test_retention_scores_bundle_both(alexnet_file, tmp_path, monkeypatch):
    from concept_eraser.metrics.retention import retention_scores, score_events

    a, b = _grids()
    r = retention_scores(a, b, rows=[1, 2], lpips_weights=alexnet_file)
    assert set(r.scores) == {"lpips", "ssim_distance"} and not r.notes
    assert [e.key for e in r.events] == ["lpips", "ssim-distance"] and r.events[0].per_cell.shape == (3, 4)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    r = retention_scores(a, b, rows=[1, 2])
    assert set(r.scores) == {"ssim_distance"} and ALEXNET_FILE in r.notes[0]
    assert [e.key for e in score_events({"ua": 1.0, "pul": 50.0})] == ["ua", "pul"]


def test_lpips_matches_the_lpips_package_with_the_same_trunk(tmp_path, monkeypatch):
    """Our offline loading (trunk state dict -> lpips slices) equals lpips' own construction."""
    import lpips
    from torchvision.models import alexnet

    from concept_eraser.metrics.lpips_retention import load_lpips

    torch.manual_seed(1)
    trunk = alexnet(weights=None)
    path = tmp_path / ALEXNET_FILE
    torch.save({k: v for k, v in trunk.state_dict().items() if k.startswith("features.")}, path)

    def fake_alexnet(pretrained=False, **_):  # torchvision's pretrained AlexNet, without the download
        net = alexnet(weights=None)
        if pretrained:
            net.load_state_dict(trunk.state_dict())
        return net

    monkeypatch.setattr(lpips.pretrained_networks.tv, "alexnet", fake_alexnet)
    ref = lpips.LPIPS(net="alex", verbose=False).eval()
    x, y = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref(x, y, normalize=True), load_lpips(path)(x, y, normalize=True))
