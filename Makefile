# One-command entry points. Every target creates the environment first if it
# is missing or stale (scripts/install.sh is a no-op when it is current).
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= launch/configs/cartpole_impala.py
ARGS ?=

.PHONY: setup train test bench bench-solve bench-actors bench-meta results bmg-ablations recovery soak lock clean

setup:
	@bash scripts/install.sh

train: setup
	$(PY) -m launch.train --config=$(CONFIG) $(ARGS)

test: setup
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m pytest tests -q --durations=15 $(ARGS)

bench: setup
	$(PY) -m benchmarks.throughput $(ARGS)

# Seconds from process start to a mean CartPole return of 475, per config and launch
# mode, two seeds each (~5 minutes) -> BENCHMARKS.md.
bench-solve: setup
	$(PY) -m benchmarks.time_to_return $(ARGS)

# End-to-end env steps/s for 1..64 actors in local_mp; a table and plot in BENCHMARKS.md.
bench-actors: setup
	$(PY) -m benchmarks.actor_scaling $(ARGS)

# The BMG paper's grid-world protocol (tuning, then 10M-step runs; many hours on 2 cores,
# resumable: ARGS="--max_minutes=60" stops cleanly and the next call continues).
results: setup
	$(PY) -m benchmarks.two_colours $(ARGS)

# Why BMG raises the grid world's entropy cost: BMG changed in one respect per row
# (L, matching direction, the target's outer step, start value, step reward); ~4 minutes
# a row, resumable per row -> RESULTS.md.
bmg-ablations: setup
	$(PY) -m benchmarks.two_colours_ablations $(ARGS)

# The grid-world agent's steps/s per program shape (fixed, MG, BMG; K = 1, 3, 6), the cost
# of meta-learning per env step, and what `make results` then takes: BENCHMARKS.md.
bench-meta: setup
	$(PY) -m benchmarks.two_colours --speed $(ARGS)

# BMG recovering a poor CartPole learning rate in the distributed trainer (~20 minutes).
recovery: setup
	$(PY) -m benchmarks.cartpole_recovery $(ARGS)

# 30 minutes of local_mp with 8 actors, one SIGKILLed every 3 minutes: restarts,
# counters and memory checked -> BENCHMARKS.md.
soak: setup
	$(PY) -m benchmarks.soak $(ARGS)

# Regenerates requirements.lock from pyproject.toml (needs `uv` on PATH).
lock:
	uv pip compile pyproject.toml --extra test --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_28 --no-header -o requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache
