import pytest

from concept_eraser.cli import EXIT_INVALID, main, parse_seeds
from concept_eraser.spec import UserError


def test_parse_seeds():
    assert parse_seeds(["0-3"]) == [0, 1, 2, 3]
    assert parse_seeds(["1", "5,9", "10-11"]) == [1, 5, 9, 10, 11]
    with pytest.raises(UserError, match="backwards"):
        parse_seeds(["5-2"])
    with pytest.raises(UserError, match="bad seed"):
        parse_seeds(["x"])


def test_models_lists_bundled_demos(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "digits-judge", "shapes", "shapes-judge"):
        assert name in out


def test_sample_without_rows_is_invalid_input(capsys, tmp_path):
    assert main(["sample", "--model", "digits", "--out", str(tmp_path / "g.png")]) == EXIT_INVALID
    assert "give grid rows" in capsys.readouterr().err
