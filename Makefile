# edgeq: `make demo` sets everything up and exports the bundled example; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeq-installed
OUT ?= out
RESULTS ?= results

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/edgeq export edgeq/examples/digits.py:DigitsCNN --weights edgeq/examples/digits_cnn.safetensors \
		--calib calibration/digits.yaml --holdout-samples 300 --backend all --backend openvino-bf16 --out $(OUT)
	$(VENV)/bin/edgeq bench $(OUT)/digits_cnn --devices devices.yaml --eval sklearn-digits:eval --out $(RESULTS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2 --durations=15

test-fast: setup
	$(VENV)/bin/pytest -n 2 -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(OUT) $(RESULTS) .pytest_cache
