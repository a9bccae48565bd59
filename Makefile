# Both targets create/reuse .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: demo test data bench-kd leaderboard clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST from Debian, unless it is there already or POTSTILL_DATA points at a copy.
data:
	@if [ -n "$$POTSTILL_DATA" ] || [ -f $(FMNIST) ]; then echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "Fashion-MNIST could not be installed; the demo will use scikit-learn digits"; \
	else echo "no apt-get (or not root): the demo will use scikit-learn digits"; fi

demo: $(STAMP) data
	$(BIN)/potstill demo

test: $(STAMP) data
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests

bench-kd: $(STAMP) data
	$(BIN)/python benchmarks/kd_fmnist.py

# LEADERBOARD.md + docs/leaderboard/ from benchmarks/results; the screenshot needs Debian's chromium.
leaderboard: $(STAMP)
	$(BIN)/potstill leaderboard --screenshot docs/leaderboard/screenshot.png

clean:
	rm -rf runs .pytest_cache
