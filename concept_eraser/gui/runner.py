"""JobRunner: drives one spec job generator at a time on a QThread; events reach the GUI through queued signals.

The job is wrapped in spec.runloop.guarded, so it always ends in a JobResult (finished, cancelled or
failed) and nothing leaves the GUI waiting. Cancel is cooperative through the job's CancelToken.

Deadlock note (ENVIRONMENT.md): the thread is a QThread subclass whose run() simply returns when the
job ends, so finishing never depends on a slot queued into the GUI thread; `wait_done()` pumps events
while it waits instead of blocking in QThread.wait().
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QThread, Signal

from concept_eraser.spec.events import JobResult
from concept_eraser.spec.runloop import CancelToken, guarded, one_line

JobLike = Generator[Any, None, Any] | Callable[[], Generator[Any, None, Any]]


class _JobThread(QThread):
    emitted = Signal(object)
    returned = Signal(object)

    def __init__(self, job: JobLike, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._job = job

    def run(self) -> None:  # worker thread
        try:
            job = self._job() if callable(self._job) and not hasattr(self._job, "send") else self._job
            gen = guarded(job)
            while True:
                try:
                    event = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                self.emitted.emit(event)
        except BaseException as exc:  # guarded() lets nothing out; this is for a factory that raised
            result = JobResult("failed", error=one_line(exc), details=traceback.format_exc())
        self.returned.emit(result)


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
        thread.emitted.connect(self._on_emitted)
        thread.returned.connect(self._on_returned)
        self._thread = thread
        self.started.emit(name)
        thread.start()
        return True

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def _on_emitted(self, event: object) -> None:
        if self._thread is not None:
            self.event.emit(self._name, event)

    def _on_returned(self, result: JobResult) -> None:
        thread, name = self._thread, self._name
        if thread is None:
            return
        thread.wait()  # run() has already returned after emitting; this only joins
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
