"""Run one bench case in its own process (so its peak RSS is its own) and read back its RESULT line."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_child(args: list[str], threads: int = 1, **on_error) -> dict:
    """`python <args>` with `threads` threads; the JSON after "RESULT ", else `on_error` plus stderr's last line."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line:
        return json.loads(line[len("RESULT "):])
    return {**on_error, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
