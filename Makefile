# Foundation lives in its own virtual environment: its top-level packages (daemon, agents, ipc)
# are common words that would clash with other projects in a shared site-packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

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

# The bench extra (circus, supervisor) goes into the same venv, once, behind its own stamp.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Side by side with circusd and supervisord; e.g. make bench BENCH_ARGS='--only restart,idle'
bench: $(BENCH_STAMP)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

# Opt-in, root only (prints SKIP with the reason otherwise): the shipped systemd/foundation.service under a real
# systemd booted in private namespaces (tests/systemd/run.sh, docs/systemd.md). Not part of `make test`.
.PHONY: test-systemd
test-systemd: $(STAMP)
	tests/systemd/run.sh
