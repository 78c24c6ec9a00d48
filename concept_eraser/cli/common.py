"""What every command shares: exit codes, the progress bar and job driver, argument parsing helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

from concept_eraser.spec import (
    CancelToken,
    JobContext,
    JobResult,
    Progress,
    StageStarted,
    UserError,
    guarded,
    run_blocking,
)
from concept_eraser.spec.events import Log

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


class ProgressBar:
    """One updating line on stderr: stage, bar, counts, scalars, ETA (plain lines when not a TTY)."""

    def __init__(self, stream=None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.stage = ""
        self.t0 = time.perf_counter()
        self.last_print = 0.0

    def start(self, stage: str) -> None:
        self.finish()
        self.stage, self.t0 = stage, time.perf_counter()

    def update(self, p: Progress) -> None:
        if p.stage != self.stage:
            self.start(p.stage)
        now = time.perf_counter()
        done = p.total is not None and p.step >= p.total
        if not done and now - self.last_print < (0.1 if self.tty else 5.0):
            return
        self.last_print = now
        elapsed = now - self.t0
        text = f"{p.stage:>8} "
        if p.total:
            frac = min(1.0, p.step / p.total)
            fill = int(frac * self.width)
            eta = elapsed / p.step * (p.total - p.step) if p.step else 0.0
            text += f"[{'#' * fill}{'.' * (self.width - fill)}] {p.step}/{p.total} {_hms(elapsed)}<{_hms(eta)}"
        else:
            text += f"{p.step} {_hms(elapsed)}"
        for k, v in p.scalars.items():
            text += f" {k}={v:.4g}"
        if self.tty:
            self.stream.write("\r" + text.ljust(100)[:150])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._open = self.tty

    def finish(self) -> None:
        if getattr(self, "_open", False):
            self.stream.write("\n")
            self._open = False


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def drive(job, cancel: CancelToken, quiet: bool = False) -> JobResult:
    """Run a job guarded, with a progress bar; the first Ctrl-C cancels, the second exits at once."""
    bar = ProgressBar()
    presses = 0

    def on_sigint(signum, frame):
        nonlocal presses
        presses += 1
        if presses == 1:
            cancel.cancel()
            sys.stderr.write("\ncancelling after the current step (Ctrl-C again to exit now)\n")
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    def show(event) -> None:
        if quiet:
            return
        if isinstance(event, Progress):
            bar.update(event)
        elif isinstance(event, StageStarted):
            bar.start(event.stage)
        elif isinstance(event, Log):
            bar.finish()
            print(f"{event.level}: {event.message}", file=sys.stderr)

    old = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        result = run_blocking(guarded(job), show)
        bar.finish()
        return result
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def job_context(args) -> JobContext:
    return JobContext(cancel=CancelToken(), device=getattr(args, "device", "auto"))


def model_source(args):
    from concept_eraser.spec import ModelSource

    return ModelSource(path=str(args.model if hasattr(args, "model") else args.path),
                       config_dir=getattr(args, "config_dir", None))


def parse_seeds(items: list[str]) -> list[int]:
    """'0-7' -> 0..7; '3' -> 3; several items or commas allowed."""
    seeds: list[int] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise UserError(f"seed range {part!r} runs backwards; write it as {b}-{a}")
                seeds.extend(range(a, b + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise UserError(f"bad seed {part!r}: use numbers and ranges like 0-7")
    return seeds


def concept(text: str):
    from concept_eraser.spec import Concept

    t = text.strip()
    return Concept(label=int(t)) if re.fullmatch(r"\d+", t) else Concept(text=t)


def set_value(raw: str):
    """--set values: JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_sets(items: list[str]) -> dict:
    """`--set key=value` items as a method-config dict (also used by the benches)."""
    cfg = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: write it as key=value, e.g. --set lr=1e-4")
        k, v = item.split("=", 1)
        cfg[k.strip()] = set_value(v.strip())
    return cfg


def exit_code(result: JobResult) -> int:
    if result.status == "finished":
        return EXIT_OK
    if result.status == "cancelled":
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"error: {result.error}", file=sys.stderr)
    if os.environ.get("CONCEPT_ERASER_DEBUG") and result.details:
        print(result.details, file=sys.stderr)
    return EXIT_INVALID if result.user_error else EXIT_FAILED
