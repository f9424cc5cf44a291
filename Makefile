# `make demo` and `make test` work on a fresh clone: both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench clean system-deps

# Debian tools some tests and benchmarks use (promtool, chromium, xdelta3, zstd, GNU time,
# systemd-analyze for the units, haproxy and mosquitto for the compose stack's configs, swtpm
# (with swtpm-tools for EK certificates) and tpm2-tools for attestation); CI installs them, elsewhere the tests that need them skip
# with the reason.
SYSTEM_TOOLS := promtool:prometheus chromium:chromium xdelta3:xdelta3 zstd:zstd /usr/bin/time:time \
	systemd-analyze:systemd haproxy:haproxy swtpm:swtpm swtpm_setup:swtpm-tools \
	tpm2_quote:tpm2-tools \
	mosquitto:mosquitto mosquitto_ctrl:mosquitto-clients

# rauc-hawkbit is the RAUC project's hawkBit DDI client, driven by the interop tests: they use
# its DDI package, which needs only aiohttp (in the dev extra); its application's D-Bus stack
# (gbulb, PyGObject) does not build without GLib headers, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'rauc-hawkbit==0.2.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/demo.py

# Tests run in TEST_JOBS processes (pytest-xdist), a test module per process at a time so
# its module-scoped control plane is shared as before; most integration tests wait on real
# processes, so three jobs fit two cores. Modules are handed out longest first
# (tests/schedule.py), not as xdist reorders them (most tests first, which left the long
# few-scenario modules to the end while the other workers sat idle).
TEST_JOBS ?= 3

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check edgefleet tests demo bench
	$(BIN)/ruff format --check edgefleet tests demo bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict edgefleet/core edgefleet/controllers edgefleet/security edgefleet/errors.py
	$(BIN)/mypy edgefleet
	$(BIN)/mypy tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# The benchmark suite: every bench/ script one after the other, one report in
# bench/results/latest.{json,md}. BENCH_ARGS=--quick for the small sizes.
bench: $(STAMP) system-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
