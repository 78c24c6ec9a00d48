"""Cooperative cancel and the guarded run loop shared by the CLI and the GUI."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .events import Event, JobResult


class JobCancelled(Exception):
    """Raised inside a job when its CancelToken was set; becomes JobResult("cancelled")."""


class UserError(Exception):
    """Bad input the user can fix: shown as one line, without a traceback."""


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise JobCancelled()


@dataclass(frozen=True)
class JobContext:
    cancel: CancelToken = field(default_factory=CancelToken)
    device: str = "auto"
    workdir: Path = Path(".")
    preview_every: int = 50

    def check_cancelled(self) -> None:
        self.cancel.check()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, UserError):
        return text or name
    return f"{name}: {text}" if text else name


def guarded(job: Generator[Event, None, Any]) -> Generator[Event, None, JobResult]:
    """Run `job`, turning its return value or any exception into a JobResult. Nothing escapes."""
    try:
        value = yield from job
    except JobCancelled:
        return JobResult("cancelled")
    except UserError as exc:
        return JobResult("failed", error=one_line(exc), details=traceback.format_exc(), user_error=True)
    except Exception as exc:  # reported to the user, never swallowed
        return JobResult("failed", error=one_line(exc), details=traceback.format_exc())
    return value if isinstance(value, JobResult) else JobResult("finished", value=value)


R = TypeVar("R")


def run_blocking(job: Generator[Event, None, R], on_event: Callable[[Event], None] = lambda e: None) -> R:
    """Drive a job to its end on this thread (CLI, tests) and return what it returns."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        on_event(event)


def quiet(job: Generator[Event, None, R]) -> Generator[Event, None, R]:
    """Drive a nested job, dropping its StageStarted/Progress events (they would reset the caller's bar)."""
    from .events import Progress, StageStarted

    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if not isinstance(event, StageStarted | Progress):
            yield event
