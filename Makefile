# `make demo` and `make test` work from a fresh clone: they create .venv and install the
# project into it (again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rafty-installed
SEEDS ?= 300
JOBS ?= 2

.PHONY: demo test sim man clean

demo: $(STAMP)
	$(BIN)/python -m raftctl.demo

test: $(STAMP)
	$(if $(SIM_SEEDS),SIM_SEEDS=$(SIM_SEEDS)) $(BIN)/pytest -q

# A longer (or shorter) simulation sweep on JOBS processes: make sim SEEDS=1000 JOBS=2
sim: $(STAMP)
	SIM_SEEDS=$(SEEDS) SIM_JOBS=$(JOBS) $(BIN)/pytest -q tests/sim

# rafty vs etcd and PySyncObj on this machine, one after the other (installs them when
# missing; about 15 minutes). Not part of `make test`. make bench-peers BENCH_SECONDS=5
BENCH_SECONDS ?= 10
ELECTION_TRIALS ?= 200
.PHONY: bench-peers
bench-peers: $(STAMP)
	$(BIN)/python -m tests.perf.peers --seconds $(BENCH_SECONDS) --election-trials $(ELECTION_TRIALS)

# Chaos on five real raftd nodes for DURATION seconds (make test runs a 30-second one), then
# the linearizability check; prints a summary. CHAOS_SEED=N replays a schedule, and
# CHAOS_ARTIFACTS=DIR keeps the history, fault log and node logs (in a new DIR/run-*
# per run). make chaos DURATION=600
DURATION ?= 300
.PHONY: chaos
chaos: $(STAMP)
	CHAOS_DURATION=$(DURATION) $(BIN)/pytest -q -s tests/chaos

# Regenerate man/ and completions/ after changing a command or option.
man: $(STAMP)
	$(BIN)/python -m raftctl.manpage --write

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,federated]'
	touch $@
