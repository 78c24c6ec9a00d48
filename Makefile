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

# Opens the app (real engine) with the bundled digits demo model loaded; torch loads behind the open window.
run: $(STAMP)
	$(PY) -m concept_eraser.gui --model digits

# The headless demo (no window): same-seed grids from the bundled digits and shapes models into runs/demo/.
demo: $(STAMP)
	$(PY) -m concept_eraser run-demo

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check concept_eraser tests bench
	.venv/bin/lint-imports

# One PNG per wizard page in a real window under Xvfb (installs xvfb & co. when missing).
# Real engine on the digits demo (a short ESD-x run) by default; BACKEND=fake for the torch-free fake backend.
BACKEND ?= real
screenshots: $(STAMP)
	PY=$(PY) bash scripts/screenshots.sh --backend $(BACKEND)

bench: $(STAMP)
	$(PY) bench/sampling.py

clean-venv:
	rm -rf .venv
