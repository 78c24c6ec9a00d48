"""JobRunner: events through queued signals, results, cancel within a step, failure, one job at a time."""

from __future__ import annotations

import threading
import time

from concept_eraser.gui.runner import JobRunner
from concept_eraser.spec.events import JobResult, Progress
from concept_eraser.spec.runloop import CancelToken, UserError


def counting_job(n: int, token: CancelToken | None = None, delay: float = 0.0, threads: list | None = None):
    for i in range(n):
        if threads is not None:
            threads.append(threading.current_thread())
        if token is not None:
            token.check()
        time.sleep(delay)
        yield Progress("unlearn", i + 1, n, {"loss": 1.0 / (i + 1)})
    return n * 10


def failing_job():
    yield Progress("unlearn", 1, 2)
    raise ValueError("boom at step 2")


def user_error_job():
    raise UserError("the model path is empty")
    yield  # pragma: no cover


def test_events_arrive_on_gui_thread_and_result_wraps_return(qtbot):
    runner = JobRunner()
    seen, where = [], []
    runner.event.connect(lambda name, ev: (seen.append((name, ev)), where.append(threading.current_thread())))
    worker_threads: list = []
    with qtbot.waitSignal(runner.done, timeout=5000) as blocker:
        assert runner.start("count", counting_job(5, threads=worker_threads))
    name, result = blocker.args
    assert name == "count" and result.status == "finished" and result.value == 50
    assert [ev.step for _, ev in seen] == [1, 2, 3, 4, 5]
    assert all(t is threading.main_thread() for t in where)
    assert all(t is not threading.main_thread() for t in worker_threads)
    assert not runner.busy


def test_factory_runs_on_worker_thread(qtbot):
    runner = JobRunner()
    called = []

    def factory():
        called.append(threading.current_thread())
        return counting_job(1)

    with qtbot.waitSignal(runner.done, timeout=5000):
        runner.start("f", factory)
    assert called and called[0] is not threading.main_thread()


def test_second_start_is_refused_with_a_message(qtbot):
    runner = JobRunner()
    token = CancelToken()
    assert runner.start("first", counting_job(1000, token, delay=0.01), token)
    with qtbot.waitSignal(runner.refused, timeout=1000) as blocker:
        assert not runner.start("second", counting_job(1))
    assert "first" in blocker.args[0] and "second" in blocker.args[0]
    with qtbot.waitSignal(runner.done, timeout=5000) as done:
        runner.cancel()
    assert done.args[1].status == "cancelled"


def test_cancel_stops_within_one_step(qtbot):
    runner = JobRunner()
    token = CancelToken()
    steps = []
    runner.event.connect(lambda n, ev: steps.append(ev.step))
    runner.start("long", counting_job(10_000, token, delay=0.01), token)
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=5000)
    with qtbot.waitSignal(runner.done, timeout=5000) as blocker:
        runner.cancel()
        at_cancel = len(steps)
    assert blocker.args[1].status == "cancelled"
    assert len(steps) <= at_cancel + 2  # the step in flight, plus one already queued


def test_failure_becomes_one_line_error_with_traceback(qtbot):
    runner = JobRunner()
    with qtbot.waitSignal(runner.done, timeout=5000) as blocker:
        runner.start("bad", failing_job())
    result: JobResult = blocker.args[1]
    assert result.status == "failed"
    assert result.error == "ValueError: boom at step 2"
    assert "Traceback" in result.details and "failing_job" in result.details


def test_user_error_and_factory_errors(qtbot):
    runner = JobRunner()
    with qtbot.waitSignal(runner.done, timeout=5000) as blocker:
        runner.start("user", user_error_job())
    assert blocker.args[1].user_error and blocker.args[1].error == "the model path is empty"

    def broken_factory():
        raise RuntimeError("no backend")

    with qtbot.waitSignal(runner.done, timeout=5000) as blocker:
        runner.start("factory", broken_factory)
    assert blocker.args[1].status == "failed" and "no backend" in blocker.args[1].error


def test_wait_done_does_not_deadlock(qtbot):
    runner = JobRunner()
    token = CancelToken()
    done = []
    runner.done.connect(lambda n, r: done.append(r.status))
    runner.start("long", counting_job(10_000, token, delay=0.01), token)
    qtbot.wait(50)
    runner.cancel()
    assert runner.wait_done(10)
    assert done == ["cancelled"] and not runner.busy
