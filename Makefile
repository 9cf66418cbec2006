# Two commands for a newcomer (see README):  make run   |   make test
# Both set up everything first: system packages (as root, when missing), a venv, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup system-deps ipython8 bench clean help

help:
	@echo "make run    set up, install the DCodeX kernelspecs into the venv, open JupyterLab on notebooks/"
	@echo "make test   set up, then run the whole test suite (engine, kernel, magics, notebooks, browser)"
	@echo "make bench  run every benchmark, print one table, write benchmarks/RESULTS.md and the README's table"

# apt packages: libseccomp-dev (the sandbox launcher, built on first use, links Debian's
# libseccomp for its system-call filter; without it runs lack that layer and say so),
# python3-psutil (the hostile suite runs the engine as an ordinary user with the system Python),
# chromium (browser test).
APT_PACKAGES := libseccomp-dev python3-psutil chromium

system-deps:
	@missing=""; for pkg in $(APT_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: not installed:$$missing (install them as root; DCodeX runs without, degraded)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lab]'
	@# A plain path in a .pth instead of setuptools' import-hook finder: every sandboxed Python
	@# program starts this venv's interpreter, and the finder cost it ~24 ms per start.
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat 2>/dev/null || true
	touch $@

setup: system-deps $(STAMP)

# JupyterLab listens on loopback only. It refuses to run as root without --allow-root, so root
# gets that flag (and a note); no browser is opened as root or without a display: JupyterLab
# prints the URL (with its token) to open instead. JUPYTER_ARGS adds options, e.g. --port=0.
JUPYTER_ARGS ?=

run: setup
	$(BIN)/dcodex install --sys-prefix
	@flags="--ip=127.0.0.1"; \
	if [ "$$(id -u)" = 0 ]; then \
	  flags="$$flags --allow-root --no-browser"; \
	  echo "note: running as root: JupyterLab gets --allow-root (it refuses root otherwise), on 127.0.0.1 only"; \
	elif [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
	  flags="$$flags --no-browser"; \
	fi; \
	echo "JupyterLab on notebooks/: open the http://127.0.0.1:... URL it prints below (Ctrl-C stops it)"; \
	exec $(BIN)/jupyter lab --notebook-dir=notebooks $$flags $(JUPYTER_ARGS)

test: setup ipython8
	$(BIN)/python -m pytest --nbval
	$(IPY8)/bin/python -m pytest tests/test_magics.py

# The magics must work on IPython 8 as well as 9: a second venv runs their tests on 8.
IPY8 := .venv-ipython8
ipython8: $(IPY8)/.installed
$(IPY8)/.installed: pyproject.toml
	$(PYTHON) -m venv $(IPY8)
	$(IPY8)/bin/pip install -q -e . pytest 'ipython>=8,<9'
	touch $@

# One table of every benchmark (benchmarks/bench.py), also written to benchmarks/RESULTS.md and
# the README. BENCH_ARGS=--quick for small repeat counts.
BENCH_ARGS ?=
bench: setup
	$(BIN)/python benchmarks/bench.py --write $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(IPY8) build *.egg-info test-artifacts
