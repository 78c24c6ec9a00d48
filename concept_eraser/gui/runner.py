"""JobRunner: drives one spec job generator at a time on a QThread; events reach the GUI through queued signals.

The job is wrapped in spec.runloop.guarded, so it always ends in a JobResult (finished, cancelled or
failed) and nothing leaves the GUI waiting. Cancel is cooperative through the job's CancelToken.

Deadlock note (ENVIRONMENT.md): the thread is a QThread subclass whose run() simply returns when the
job ends, so finishing never depends on a slot queued into the GUI thread; `wait_done()` pumps events
while it waits instead of blocking in QThread.wait().
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QThread, QTimer, Signal

from concept_eraser.spec.events import JobResult
from concept_eraser.spec.runloop import CancelToken, guarded, one_line, run_blocking

BATCH_S = 0.03  # longest stretch the GUI thread spends delivering job events before it repaints
JobLike = Generator[Any, None, Any] | Callable[[], Generator[Any, None, Any]]


_END = object()  # queue marker: the next item is the JobResult


class _JobThread(QThread):
    """Runs the job; events go into a queue and one `wake` signal is pending at a time, so a fast job
    cannot flood the GUI thread's event queue (the GUI drains it in time-boxed batches)."""

    wake = Signal()

    def __init__(self, job: JobLike, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._job = job
        self.queue: deque[Any] = deque()
        self.lock = threading.Lock()
        self.wake_pending = False

    def _put(self, *items: Any) -> None:
        with self.lock:
            self.queue.extend(items)
            if self.wake_pending:
                wake = False
            else:
                self.wake_pending = wake = True
        if wake:
            self.wake.emit()
        time.sleep(0)  # hand the GIL to the GUI thread between events

    def run(self) -> None:  # worker thread
        try:
            job = self._job() if callable(self._job) and not hasattr(self._job, "send") else self._job
            result = run_blocking(guarded(job), self._put)
        except BaseException as exc:  # guarded() lets nothing out; this is for a factory that raised
            result = JobResult("failed", error=one_line(exc), details=traceback.format_exc())
        self._put(_END, result)


class JobRunner(QObject):
    """One job at a time. Signals: started(name), event(name, event), done(name, JobResult), refused(message)."""

    started = Signal(str)
    event = Signal(str, object)
    done = Signal(str, object)
    refused = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: _JobThread | None = None
        self._name = ""
        self._token: CancelToken | None = None
        self.last_result: JobResult | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    @property
    def current(self) -> str:
        return self._name if self.busy else ""

    def start(self, name: str, job: JobLike, token: CancelToken | None = None) -> bool:
        """Run `job` (a generator, or a function returning one, called on the worker thread)."""
        if self._thread is not None:
            self.refused.emit(f"'{self._name}' is still running: wait for it or cancel it before starting '{name}'")
            return False
        self._name, self._token = name, token
        thread = _JobThread(job, self)
        thread.wake.connect(self._drain)
        self._thread = thread
        self.started.emit(name)
        thread.start()
        return True

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def _drain(self) -> None:
        """Deliver queued events for at most BATCH_S, then yield to the event loop (paint, input, timers)."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + BATCH_S
        while True:
            with thread.lock:
                if not thread.queue:
                    thread.wake_pending = False
                    return
                item = thread.queue.popleft()
                if item is _END:
                    result = thread.queue.popleft()
            if item is _END:
                self._on_returned(result)
                return
            self.event.emit(self._name, item)
            if time.monotonic() > deadline:
                QTimer.singleShot(1, self._drain)
                return

    def _on_returned(self, result: JobResult) -> None:
        thread, name = self._thread, self._name
        if thread is None:
            return
        thread.wait()  # run() returns right after queueing the result; this only joins
        thread.deleteLater()
        self._thread, self._token = None, None
        self.last_result = result
        self.done.emit(name, result)

    def wait_done(self, timeout_s: float = 30.0) -> bool:
        """Process events until the current job has ended and its `done` was delivered (closing, tests)."""
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
            if self._thread is not None and self._thread.isFinished():
                QCoreApplication.processEvents()
            time.sleep(0.005)
        return self._thread is None
