# Two commands on a fresh Debian 12 / Python 3.11 machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.fmc-ij-installed
DEMO_OUT ?= demo-out

.PHONY: install install-test system-deps demo test lint clean models bench bench-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first: any torch spec other than the local CPU wheel would download a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),test]"
	touch $@

install: $(STAMP)

# ImageJ 1 (Debian's libij-java), Xvfb and a JDK for the Fiji-side tests, Chromium to render the HTML report;
# only attempted as root.
system-deps:
	@if [ -f /usr/share/java/ij.jar ] && command -v xvfb-run >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 \
	    && command -v chromium >/dev/null 2>&1; then \
	  echo "ImageJ 1, Xvfb, JDK and Chromium present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libij-java xvfb xauth \
	    default-jdk-headless chromium >/dev/null) \
	    || echo "warning: could not install libij-java/xvfb/jdk/chromium; those tests will be skipped"; \
	else \
	  echo "note: not root; install libij-java and xvfb to run the ImageJ tests"; \
	fi

# The main job on built-in synthetic data: simulate (misregistered) -> register -> train care3d -> predict a
# held-out specimen with uncertainty -> evaluate -> SQUIRREL -> bioimage.io bundle -> report.html.
DEMO_MINUTES ?= 6
DEMO_SEED ?= 0
demo: $(STAMP)
	$(BIN)/fmc-ij demo --out $(DEMO_OUT) --minutes $(DEMO_MINUTES) --seed $(DEMO_SEED) --overwrite

# The demo bundles in models/ (one care3d per channel on the built-in synthetic data; about 12 min on 2 cores).
MODEL_MINUTES ?= 5
models: $(STAMP)
	$(BIN)/python models/make_models.py --minutes $(MODEL_MINUTES)

# Two pytest workers (the 2-core CI machine), one test file per worker so module fixtures are built once.
TEST_WORKERS ?= 2
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -ra --durations=20 -n $(TEST_WORKERS) --dist loadfile

# Benchmarks against the peers (benchmarks/RESULTS.md, about 90 min on 2 cores: three training budgets per tool). Each peer gets its own venv
# under $(PEERS_DIR) (CAREamics with a torchvision stand-in, CSBDeep on tensorflow-cpu, NanoPyx, scikit-image);
# the product never imports them.
PEERS_DIR ?= $(or $(FMC_BENCH_PEERS),.bench/peers)
PEERS ?= skimage nanopyx csbdeep careamics
FMC_BENCH_BUDGETS ?= 60,240,900
bench-peers:
	@for p in $(PEERS); do PYTHON=$(PYTHON) benchmarks/peers/setup.sh $$p $(PEERS_DIR)/$$p || exit 1; done

bench: $(STAMP) system-deps bench-peers
	FMC_BENCH_PEERS=$(abspath $(PEERS_DIR)) FMC_BENCH_BUDGETS=$(FMC_BENCH_BUDGETS) $(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check fmc_ij tests benchmarks models
	$(BIN)/ruff format --check fmc_ij tests benchmarks models

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info .bench/data
