"""Without a display the app says so in one line (exit 2) instead of Qt aborting."""

import os
import subprocess
import sys


def test_no_display_is_a_one_line_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "concept_eraser.gui", "--model", "digits"], env=env,
                          capture_output=True, text=True, timeout=120)
    if not sys.platform.startswith("linux"):
        return
    assert proc.returncode == 2
    assert "no display found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
