"""The GUI package (fake backend included) imports without torch or the torch side of concept_eraser."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gui_import_in_fresh_process_does_not_import_torch():
    code = (
        "import sys\n"
        "import concept_eraser.gui.app, concept_eraser.gui.main_window, concept_eraser.gui.fake_backend\n"
        "import concept_eraser.gui.pages\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', 'safetensors')\n"
        "       or m.startswith(('concept_eraser.engine', 'concept_eraser.methods', 'concept_eraser.metrics',\n"
        "                        'concept_eraser.backend', 'concept_eraser.cli', 'concept_eraser.demo'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_many_void_qt_calls_do_not_kill_the_process():
    """PySide6 6.12 on Python 3.11 drops a reference to None per void call; the gui package compensates."""
    code = (
        "import os\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "import concept_eraser.gui\n"
        "from PySide6.QtWidgets import QApplication, QLabel\n"
        "app = QApplication([])\n"
        "label = QLabel()\n"
        "for i in range(50_000):\n"
        "    label.setText('x')\n"
        "print('alive')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "alive" in proc.stdout, proc.stderr[-2000:]


def test_window_is_shown_within_one_second_of_cpu_time(tmp_path):
    """Start-up cost up to the first shown window, in CPU seconds (wall time on this shared machine mostly
    measures its load)."""
    code = (
        "import os, time\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "import concept_eraser.gui.app as app\n"
        "def shown():\n"
        "    print('cpu', time.process_time())\n"
        "    QApplication.instance().exit(0)\n"
        "QTimer.singleShot(0, shown)\n"
        "app.main(['--fake'])\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path),
           "CONCEPT_ERASER_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    cpu = float(proc.stdout.split("cpu")[-1])
    assert cpu < 1.0, f"{cpu:.2f} s of CPU before the window was shown"
