import numpy as np
from PIL import Image

from concept_eraser.cli import EXIT_INVALID, main


def test_sample_digits_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(["sample", "--model", "digits", "--rows", "0", "1", "uncond", "--seeds", "0-3", "--steps", "4",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    img = np.asarray(Image.open(out))
    # 3 rows x 4 seeds of 16 px with 2 px padding
    assert img.shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    again = tmp_path / "again.png"
    assert main(["sample", "--model", "digits", "--rows", "0", "1", "uncond", "--seeds", "0-3", "--steps", "4",
                 "--out", str(again)]) == 0
    assert np.array_equal(img, np.asarray(Image.open(again)))


def test_sample_bad_row_is_invalid_input(tmp_path, capsys):
    rc = main(["sample", "--model", "digits", "--rows", "12", "--seeds", "0", "--steps", "2",
               "--out", str(tmp_path / "x.png")])
    assert rc == EXIT_INVALID
    err = capsys.readouterr().err
    assert "class 12 does not exist" in err
    assert not (tmp_path / "x.png").exists()


def test_info_missing_path(capsys):
    assert main(["info", "/nonexistent/model"]) == EXIT_INVALID
    assert "error:" in capsys.readouterr().err
