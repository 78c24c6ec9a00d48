"""concept-eraser: the headless front end. Runs the same jobs as the GUI.

Exit codes: 0 done, 1 failed, 2 invalid input, 130 cancelled.
"""

from __future__ import annotations

import os
import sys

from concept_eraser.spec import UserError

from .common import EXIT_CANCELLED, EXIT_FAILED, EXIT_INVALID, EXIT_OK, drive, parse_seeds, parse_sets
from .parser import build_parser

__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "build_parser", "drive", "main",
           "parse_seeds", "parse_sets"]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_CANCELLED
