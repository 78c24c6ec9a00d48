import json

import pytest
from pydantic import ValidationError

from concept_eraser.spec import JobSpec, SampleRow, SamplingSpec, UserError, load_job, save_job
from concept_eraser.spec.jobspec import SCHEMA_VERSION, parse_job


def _spec() -> JobSpec:
    return JobSpec(
        model={"path": "digits"},
        concepts=[{"label": 3}],
        retain=[{"label": 1}, {"label": 7}],
        method="esd-x",
        method_config={"steps": 10},
        sampling={"rows": [{"label": 3}, {}], "seeds": [0, 1, 2]},
        seed=7,
    )


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_round_trip(tmp_path, suffix):
    spec = _spec()
    path = save_job(spec, tmp_path / f"job{suffix}")
    assert load_job(path) == spec
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_frozen_and_extra_forbidden():
    spec = _spec()
    with pytest.raises(ValidationError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(UserError, match="(?i)extra"):
        parse_job({"model": {"path": "digits"}, "colour": "red"})


def test_errors_are_one_line_and_name_the_field():
    with pytest.raises(UserError) as info:
        parse_job({"model": {"path": "digits"}, "sampling": {"rows": [{}], "seeds": [1, 1]}})
    assert "sampling.seeds" in str(info.value) and "unique" in str(info.value)
    assert "\n" not in str(info.value)


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "job.json"
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "model": {"path": "x"}}))
    with pytest.raises(UserError, match="newer"):
        load_job(p)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_job(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        load_job(bad)


def test_rows_parse_and_validate():
    assert SampleRow.parse("3").label == 3
    assert SampleRow.parse("uncond").kind == "unconditional"
    assert SampleRow.parse("a red circle").prompt == "a red circle"
    with pytest.raises(ValidationError):
        SampleRow(prompt="x", label=1)
    with pytest.raises(ValidationError, match="multiple of 8"):
        SamplingSpec(rows=[{}], seeds=[0], height=30)
