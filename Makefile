# Foundation lives in its own virtual environment: its top-level packages (daemon, agents, ipc)
# are common words that would clash with other projects in a shared site-packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
HELPER := daemon/shell/bin/foundation-exec
HELPER_SRC := daemon/native/foundation-exec.c

.PHONY: run test lint typecheck bench clean exec-helper install

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# One exec between fork and a child's program instead of three (setpriv, sh, program); optional: without a C
# compiler foundationd uses util-linux setpriv and a shell guard, as fast as that allows. The package build
# (setup.py, run by pip install) compiles it into the package; this rule only rebuilds it in place whenever its
# source changes: the daemon relies on what the helper does (it closes descriptors for posix_spawn). The same
# attempts as setup.py: freestanding (no libc start-up, ~0.3 ms less per child start), then on libc.
exec-helper: $(HELPER)

$(HELPER): $(HELPER_SRC)
	@mkdir -p $(dir $@)
	@cc -O2 -static -nostdlib -ffreestanding -fno-stack-protector -DFOUNDATION_EXEC_FREESTANDING \
	    -o $@ $(HELPER_SRC) 2>/dev/null \
	  || cc -O2 -static -o $@ $(HELPER_SRC) 2>/dev/null \
	  || cc -O2 -o $@ $(HELPER_SRC) 2>/dev/null \
	  || echo "note: no C compiler; foundationd will spawn through setpriv (about 1 ms slower per start)"

run: $(STAMP) $(HELPER)
	$(BIN)/foundationd

test: $(STAMP) $(HELPER)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest

# mypy --strict on the pure core and the shared protocol (files and settings in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .

# The bench extra (circus, supervisor, the workflow peers' packages) goes into the same venv, once, behind its own stamp.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Side by side with circusd and supervisord; e.g. make bench BENCH_ARGS='--only restart,idle'
bench: $(BENCH_STAMP) $(HELPER)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

# The durable-workflow peers (DBOS Transact on a throwaway PostgreSQL, Restate from npm), e.g.
# make bench-workflow-peers BENCH_ARGS='--only restate --runs 200'. Installs what is missing (bench/workflow_peers.py).
.PHONY: bench-workflow-peers
bench-workflow-peers: $(BENCH_STAMP)
	$(BIN)/python bench/workflow_peers.py $(BENCH_ARGS)

# Every layer against the real peers a user would pick instead, one table per layer, each peer installed on demand and
# skipped with a line where it cannot run here (docs/benchmarks.md). Arguments per layer: SUPERVISION_ARGS,
# AGENT_ARGS, MESSAGING_ARGS, WORKFLOW_ARGS; e.g. make bench-peers SUPERVISION_ARGS='--only restart,cold'.
.PHONY: bench-peers
bench-peers: $(BENCH_STAMP) $(HELPER)
	@echo "== process supervision: Foundation, circus, supervisord (bench/compare.py) =="
	-$(BIN)/python bench/compare.py --agents 10,500 $(SUPERVISION_ARGS)
	@echo "== Python agents: Foundation agents, Ray actors (bench/agent_peers.py) =="
	-$(BIN)/python bench/agent_peers.py $(AGENT_ARGS)
	@echo "== durable messaging: Foundation, NATS JetStream, RabbitMQ (bench/messaging_peers.py) =="
	-@if [ -f bench/messaging_peers.py ]; then $(BIN)/python bench/messaging_peers.py $(MESSAGING_ARGS); \
	  else echo "skipped: bench/messaging_peers.py is not in this tree yet"; fi
	@echo "== durable workflows: Foundation, DBOS Transact, Restate (bench/workflows.py --peers) =="
	-$(BIN)/python bench/workflows.py --peers $(WORKFLOW_ARGS)

# The scaling pictures (docs/scaling-children.png, docs/scaling-agents.png), e.g. make bench-scaling
# SCALING_ARGS='--children 10,100,1000 --peers ""'
.PHONY: bench-scaling
bench-scaling: $(BENCH_STAMP) $(HELPER)
	$(BIN)/python bench/scaling.py $(SCALING_ARGS)

# foundationctl and foundationd on PATH: symbolic links into the virtualenv (which stays where it is), e.g.
# make install PREFIX=$$HOME/.local. The completion script: foundationctl completion bash|zsh.
PREFIX ?= /usr/local
install: $(STAMP) $(HELPER)
	mkdir -p $(DESTDIR)$(PREFIX)/bin
	ln -sf $(CURDIR)/$(BIN)/foundationctl $(DESTDIR)$(PREFIX)/bin/foundationctl
	ln -sf $(CURDIR)/$(BIN)/foundationd $(DESTDIR)$(PREFIX)/bin/foundationd

clean:
	rm -rf $(VENV) build *.egg-info $(HELPER)

# Fault injection checked offline (tests/chaos/, docs/reliability.md): ROUNDS rounds of workload and faults on
# real daemons, then the checker's table, ending with `chaos: R rounds, lost L, unexpected U, duplicated D,
# reordered O`. e.g. make chaos ROUNDS=50 CHAOS_ARGS='--nemeses kill-daemon --duration 10 --seed 1'.
# A CI-sized run is part of `make test` (tests/chaos/test_chaos_run.py).
ROUNDS ?= 5
.PHONY: chaos fuzz
chaos: $(STAMP) $(HELPER)
	$(BIN)/python -m tests.chaos.run --rounds $(ROUNDS) $(CHAOS_ARGS)

# The long fuzz run (tests/test_fuzz*.py with FUZZ_EXAMPLES generated inputs per test; make test runs a CI-sized one)
FUZZ_EXAMPLES ?= 100000
fuzz: $(STAMP) $(HELPER)
	FOUNDATION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider -o timeout=0 -o faulthandler_timeout=0 \
	    tests/test_fuzz_control.py tests/test_fuzz_wire.py tests/test_fuzz_notify.py tests/test_fuzz_config.py

# Opt-in, root only (prints SKIP with the reason otherwise): the shipped systemd/foundation.service under a real
# systemd booted in private namespaces (tests/systemd/run.sh, docs/systemd.md). Not part of `make test`.
.PHONY: test-systemd
test-systemd: $(STAMP)
	tests/systemd/run.sh

# Durable messaging side by side: Foundation, NATS JetStream, RabbitMQ (apt-installed when missing), the LMDB floor.
# make bench-messaging-peers BENCH_ARGS='--only foundation,rabbitmq --n 10000'
.PHONY: bench-messaging-peers
bench-messaging-peers: $(BENCH_STAMP)
	$(BIN)/python bench/messaging_peers.py $(BENCH_ARGS)
