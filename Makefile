# dockkit: `make demo` runs the SCOOP demo on local workers; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration bench chaos system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/dockkit run examples/pids.py -n 16

# The Docker tests build the worker image; with no registry its base comes from
# the host's Debian mirror through mmdebstrap (see README, "Offline sites"). The
# cluster tests log in to the nodes with the OpenSSH client. In CI (CI set) a
# missing package that cannot be installed fails here; elsewhere it is a warning.
SYSTEM_DEPS := mmdebstrap:mmdebstrap ssh:openssh-client
system-deps:
	@missing=; for dep in $(SYSTEM_DEPS); do \
	  command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null && exit 0; \
	  echo "system-deps: installing$$missing with apt-get failed" >&2; \
	else \
	  echo "system-deps: missing$$missing; install them as root (apt-get install$$missing)" >&2; \
	fi; \
	if [ -n "$$CI" ]; then exit 1; fi; \
	echo "system-deps: going on; the Docker tests that need them will fail" >&2

test: install system-deps
	$(BIN)/python -m pytest tests --durations=15

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install system-deps
	$(BIN)/python -m pytest tests/integration

bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks

# Faults injected into real runs, locally and in a Docker cluster (built as for the
# tests): writes docs/reliability.md. CHAOS_TRIALS=2 for a short run.
chaos: install system-deps
	$(BIN)/python -m benchmarks.chaos

clean:
	rm -rf $(VENV) build dist *.egg-info
