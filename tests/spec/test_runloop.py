import threading

import numpy as np
import pytest

from concept_eraser.spec import (
    CancelToken,
    Grid,
    JobContext,
    JobResult,
    Progress,
    UserError,
    guarded,
    run_blocking,
)


def _job(ctx: JobContext, fail: Exception | None = None, steps: int = 5):
    for i in range(steps):
        ctx.check_cancelled()
        yield Progress("x", i + 1, steps)
        if fail is not None and i == 2:
            raise fail
    return 42


def test_finished_value_and_events():
    events = []
    result = run_blocking(guarded(_job(JobContext())), events.append)
    assert result == JobResult("finished", value=42)
    assert [e.step for e in events] == [1, 2, 3, 4, 5]


def test_exception_becomes_failed_result_with_one_line():
    result = run_blocking(guarded(_job(JobContext(), fail=ValueError("bad thing\nmore"))))
    assert result.status == "failed"
    assert result.error == "ValueError: bad thing"
    assert "Traceback" in result.details


def test_user_error_has_no_class_prefix():
    result = run_blocking(guarded(_job(JobContext(), fail=UserError("model not found: x"))))
    assert result.error == "model not found: x"


def test_cancel_from_another_thread_stops_within_one_step():
    ctx = JobContext(cancel=CancelToken())
    seen = []

    def on_event(e):
        seen.append(e.step)
        if e.step == 2:
            t = threading.Thread(target=ctx.cancel.cancel)
            t.start()
            t.join()

    result = run_blocking(guarded(_job(ctx)), on_event)
    assert result.status == "cancelled"
    assert seen == [1, 2]


def test_grid_is_read_only_and_checked():
    g = Grid(np.zeros((2, 3, 4, 4, 3), np.uint8), ("a", "b"), (0, 1, 2))
    assert not g.images.flags.writeable
    assert g.tiled(pad=1).shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    with pytest.raises(ValueError):
        Grid(np.zeros((2, 3, 4, 4, 3), np.uint8), ("a",), (0, 1, 2))
    with pytest.raises(TypeError):
        Grid(np.zeros((1, 1, 4, 4, 3), np.float32), ("a",), (0,))
