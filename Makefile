# Two commands on a fresh Debian 12 / Python 3.11 machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.fmc-ij-installed
DEMO_OUT ?= demo-out

.PHONY: install install-test system-deps demo test lint clean models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first: any torch spec other than the local CPU wheel would download a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),test]"
	touch $@

install: $(STAMP)

# ImageJ 1 (Debian's libij-java) and Xvfb for the Fiji-side tests; only attempted as root.
system-deps:
	@if [ -f /usr/share/java/ij.jar ] && command -v xvfb-run >/dev/null 2>&1; then \
	  echo "ImageJ 1 and Xvfb present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libij-java xvfb xauth >/dev/null) \
	    || echo "warning: could not install libij-java/xvfb; ImageJ tests will be skipped"; \
	else \
	  echo "note: not root; install libij-java and xvfb to run the ImageJ tests"; \
	fi

# The main job on built-in synthetic data, as far as it is built (simulate, inspect, register, score the
# input-as-prediction baseline, train care3d briefly, predict a held-out specimen, score it) until
# `fmc-ij demo` lands.
DEMO_MINUTES ?= 3
demo: $(STAMP)
	$(BIN)/fmc-ij simulate --kind all --out $(DEMO_OUT)/data --overwrite
	$(BIN)/fmc-ij info $(DEMO_OUT)/data/lightsheet
	$(BIN)/fmc-ij info $(DEMO_OUT)/data/beads
	$(BIN)/fmc-ij info $(DEMO_OUT)/data/filaments
	$(BIN)/fmc-ij register --dataset $(DEMO_OUT)/data/lightsheet --out $(DEMO_OUT)/registered --overwrite
	$(BIN)/fmc-ij evaluate --pred $(DEMO_OUT)/registered --gt $(DEMO_OUT)/registered --input $(DEMO_OUT)/registered --out $(DEMO_OUT)/eval-baseline --no-iou
	$(BIN)/fmc-ij simulate --kind lightsheet --n 1 --seed 1 --out $(DEMO_OUT)/heldout --overwrite
	$(BIN)/fmc-ij train --data $(DEMO_OUT)/registered --preset care3d --minutes $(DEMO_MINUTES) --out $(DEMO_OUT)/run --overwrite
	$(BIN)/fmc-ij predict --model $(DEMO_OUT)/run $(DEMO_OUT)/heldout --pattern '*_angle.tif' --out $(DEMO_OUT)/pred
	$(BIN)/fmc-ij evaluate --pred $(DEMO_OUT)/pred --gt $(DEMO_OUT)/heldout --input $(DEMO_OUT)/heldout --out $(DEMO_OUT)/eval --no-iou
	@echo "demo done: training log $(DEMO_OUT)/run/log.csv, scores $(DEMO_OUT)/eval/report.html"

# The demo bundles in models/ (one care3d per channel on the built-in synthetic data; about 12 min on 2 cores).
MODEL_MINUTES ?= 5
models: $(STAMP)
	$(BIN)/python models/make_models.py --minutes $(MODEL_MINUTES)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check fmc_ij tests benchmarks
	$(BIN)/ruff format --check fmc_ij tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info
