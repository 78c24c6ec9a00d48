import json

import pytest

from concept_eraser.cli import EXIT_INVALID, main
from concept_eraser.engine.catalog import demo_models

needs_digits = pytest.mark.skipif("digits" not in {m.name for m in demo_models() if m.available},
                                  reason="digits demo model is not built")


def test_methods_lists_esd(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "esd-x" in out and "esd-full" in out
    assert main(["methods", "--json"]) == 0
    keys = [m["key"] for m in json.loads(capsys.readouterr().out)]
    assert {"esd-x", "esd-u", "esd-full"} <= set(keys)


@needs_digits
def test_erase_digits_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "d3"
    rc = main(["erase", "--model", "digits", "--method", "esd-x", "--forget", "3", "--out", str(out),
               "--steps", "2", "--set", "batch=2", "--set", "rollout_steps=4", "--seeds", "0-1", "--samples", "0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert str(out) in captured.out and "loss" in captured.out
    job = json.loads((out / "job.json").read_text())
    assert job["method_config"]["steps"] == 2 and job["model"]["sha256"]
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # the saved job file reproduces the run's settings
    rc = main(["erase", "--job", str(out / "job.json"), "--out", str(tmp_path / "again"), "--samples", "0"])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--forget", "3", "--set", "eta=-2"], "eta"),
    (["--forget", "12"], "class 12 does not exist"),
    (["--forget", "3", "--set", "nonsense=1"], "nonsense"),
    (["--forget", "3", "--set", "oops"], "key=value"),
    ([], "needs a concept"),
    (["--forget", "3", "--device", "cpu", "--dtype", "bfloat16"], "use --dtype float32"),
])
@needs_digits
def test_erase_bad_input_exit_2_one_line(tmp_path, capsys, argv, needle):
    rc = main(["erase", "--model", "digits", "--method", "esd-x", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_INVALID
    assert len(err) == 1 and needle in err[0], err


def test_erase_unknown_method(tmp_path, capsys):
    rc = main(["erase", "--model", "digits", "--method", "nope", "--forget", "3", "--out", str(tmp_path / "x")])
    assert rc == EXIT_INVALID
    assert "unknown method 'nope'" in capsys.readouterr().err
