# Every target sets up .venv when it is missing or older than pyproject.toml.
PY      := .venv/bin/python
STAMP   := .venv/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup run demo test lint bench screenshots clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

# Opens the app on the bundled digits demo model (headless demo grid until the wizard lands).
run: $(STAMP)
	$(PY) -m concept_eraser run-demo

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check concept_eraser tests bench
	.venv/bin/lint-imports

# One PNG per wizard page in a real window under Xvfb (installs xvfb & co. when missing).
# BACKEND=real uses the engine on the digits demo instead of the fake backend.
BACKEND ?= fake
screenshots: $(STAMP)
	PY=$(PY) bash scripts/screenshots.sh --backend $(BACKEND)

bench: $(STAMP)
	$(PY) bench/sampling.py

clean-venv:
	rm -rf .venv
