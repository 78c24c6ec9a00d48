import json

import pytest

from concept_eraser.cli import EXIT_INVALID, main
from concept_eraser.engine.catalog import demo_models

needs_digits = pytest.mark.skipif("digits" not in {m.name for m in demo_models() if m.available},
                                  reason="digits demo model is not built")


@needs_digits
def test_evaluate_identical_digits_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    rc = main(["evaluate", "--original", "digits", "--edited", "digits", "--forget", "3", "--samples", "2",
               "--set", "steps=5", "--set", "grid_seeds=[0, 1]", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "ua " in captured.out and "report.html" in captured.out
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["scores"]["ua"] == data["scores"]["ua_before"]
    assert data["scores"]["ssim_distance_retain"] == pytest.approx(0.0, abs=1e-6)
    assert data["leaks"] == [] and data["sampling"]["judged_samples_per_row"] == 2


def test_evaluate_needs_to_know_what_was_erased(tmp_path, capsys):
    rc = main(["evaluate", "--original", "digits", "--edited", "digits", "--out", str(tmp_path)])
    assert rc == EXIT_INVALID
    assert "what was erased" in capsys.readouterr().err


def test_evaluate_run_without_model(tmp_path, capsys):
    (tmp_path / "job.json").write_text(json.dumps({"model": {"path": "digits"}, "concepts": [{"label": 3}]}))
    rc = main(["evaluate", "--edited", str(tmp_path)])
    assert rc == EXIT_INVALID
    assert "no model/" in capsys.readouterr().err
