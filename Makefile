# Foundation lives in its own virtual environment: its top-level packages (daemon, agents, ipc)
# are common words that would clash with other projects in a shared site-packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/foundationd

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/restart_latency.py
	$(BIN)/python bench/idle_cost.py

clean:
	rm -rf $(VENV) build *.egg-info

# Opt-in, root only (prints SKIP with the reason otherwise): the shipped systemd/foundation.service under a real
# systemd booted in private namespaces (tests/systemd/run.sh, docs/systemd.md). Not part of `make test`.
.PHONY: test-systemd
test-systemd: $(STAMP)
	tests/systemd/run.sh
