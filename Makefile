# The two commands for a newcomer: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test venv bench lint clean install fuzz arm64-check

$(STAMP): setup.py pyproject.toml
	scripts/ensure-system-deps.sh demo
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qrgate demo

test: $(STAMP)
	scripts/ensure-system-deps.sh test
	PATH="$(abspath $(VENV))/bin:/usr/sbin:$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)

# Coverage-guided fuzzing of the credential parsers (RELIABILITY R1); x86_64 (atheris wheels).
FUZZ_RUNS ?= 10000000
fuzz: $(STAMP)
	mkdir -p .fuzz-corpus .fuzz-artifacts
	$(PY) -m tests.fuzz_credentials .fuzz-corpus -runs=$(FUZZ_RUNS) -max_len=4096 -rss_limit_mb=2048 \
		-artifact_prefix=.fuzz-artifacts/ -print_final_stats=1

bench: $(STAMP)
	$(VENV)/bin/qrgate bench decode
	$(VENV)/bin/qrgate bench loop

# Install as a systemd service (root): user, /opt/qrgate/venv, /etc/qrgate/qrgate.toml, unit. Idempotent.
install:
	systemd/install.sh

# The Raspberry Pi path on arm64 Debian bookworm under qemu-user (root; opt-in, slow, never in
# `make test` or CI): installer, unit, the architecture-relevant tests, demo and bench. README, "Raspberry Pi".
arm64-check:
	scripts/arm64-check.sh

clean:
	rm -rf $(VENV) build *.egg-info
