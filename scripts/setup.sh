#!/usr/bin/env bash
# Idempotent set-up: system libraries Qt needs, then .venv with the project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# Qt (offscreen and xcb) needs a few shared libraries; install them only when missing.
need=()
for lib in libEGL.so.1 libfontconfig.so.1 libxkbcommon.so.0 libGL.so.1 libdbus-1.so.3; do
    ldconfig -p | grep -q "$lib" || need+=("$lib")
done
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system libraries for Qt (${need[*]})"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libegl1 libfontconfig1 libxkbcommon0 libgl1 libdbus-1-3 >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision first at the versions that install from this machine's disk (PyPI elsewhere).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
