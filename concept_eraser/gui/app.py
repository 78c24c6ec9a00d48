"""concept-eraser-gui: show the window at once, load the engine (torch) in the background on the worker thread.

`--fake` (or CONCEPT_ERASER_FAKE=1) runs on the torch-free FakeBackend: for development, tests and screenshots.
"""

from __future__ import annotations

import argparse
import os
import sys

from concept_eraser.spec.events import Log


def warmup_job(fake: bool = False, **fake_options):
    """Job that builds the backend on the worker thread (torch is imported there, never on the GUI thread)."""
    yield Log("info", "loading the engine")
    if fake:
        from .fake_backend import FakeBackend

        return FakeBackend(**fake_options)
    # The one lazy import of the torch side (allowed by the import contract). It runs on the worker thread,
    # so the window is up before torch, diffusers and the methods load.
    from concept_eraser.backend import LocalBackend

    backend = LocalBackend()
    if hasattr(backend, "warmup"):  # imports what demo_models/methods/metrics/export_formats need, off the GUI thread
        backend.warmup()
    else:
        for name in ("demo_models", "methods", "metrics"):
            if hasattr(backend, name):
                getattr(backend, name)()
    return backend


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="concept-eraser-gui", description="The concept_eraser desktop app.")
    parser.add_argument("--fake", action="store_true", default=os.environ.get("CONCEPT_ERASER_FAKE", "") not in ("", "0"),
                        help="run on the torch-free fake backend (also CONCEPT_ERASER_FAKE=1)")
    parser.add_argument("--step-delay", type=float, default=0.03, help="fake backend: seconds per training step")
    parser.add_argument("--model", default=None,
                        help="load this model when the engine is ready: a demo name (digits, shapes) or a folder/file")
    parser.add_argument("job", nargs="?", help="a job file (.json/.toml) to open")
    return parser.parse_args(argv)


def no_display() -> bool:
    """Linux/BSD without X11 or Wayland and no explicit Qt platform: Qt would abort with a long message."""
    if not sys.platform.startswith(("linux", "freebsd")) or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if no_display():
        print("concept-eraser-gui: no display found (DISPLAY/WAYLAND_DISPLAY unset); run it on a desktop, under "
              "xvfb-run, or use the headless CLI: concept-eraser --help (make demo)", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("concept_eraser")
    app.setOrganizationName("concept_eraser")
    window = MainWindow(backend_label="fake backend" if args.fake else "")
    window.show()
    options = {"step_delay": args.step_delay} if args.fake else {}
    window.start_backend(lambda: warmup_job(args.fake, **options))
    if args.job:
        window.open_job(args.job)
    elif args.model:
        window.load_when_ready(args.model)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
