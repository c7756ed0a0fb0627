# The two set-up commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned: this wheel is CPU-only and available offline; an unpinned torch pulls GBs of CUDA.
TORCH := torch==2.13.0
# transformers is pinned for the tests and the demo: the parity tests and the oracles
# (../shared/reference) are checked against this release
TRANSFORMERS := transformers==5.24.0
# the VILA and Mini-Gemini oracles (../shared/reference/vila, mgm) import timm and open_clip, both declaring
# torchvision, whose PyPI wheel cannot load beside torch+cpu; the CogVLM SAT oracle (../shared/reference/cogagent)
# imports SwissArmyTransformer, which declares deepspeed (CUDA tooling to build): all installed without dependencies
ORACLE_NO_DEPS := timm==1.0.31 open_clip_torch==3.3.0 SwissArmyTransformer==0.4.12

# A second environment with only the runtime (`pip install .`, as a Jetson image is built): the tests
# run the runtime CLI in it against an export made by .venv, so a missing or extra dependency fails.
RUNTIME_VENV := .venv-runtime

.PHONY: demo test install runtime-env browser clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)" "$(TRANSFORMERS)"
	$(PIP) install -q -e ".[export,dev]"
	$(PIP) install -q --no-deps $(ORACLE_NO_DEPS)
	touch $@

install: $(VENV)/.installed

$(RUNTIME_VENV)/.installed: pyproject.toml Makefile
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install -q .
	touch $@

# the package itself is reinstalled every time (a copy, not editable: it must be the code under test)
runtime-env: $(RUNTIME_VENV)/.installed
	rm -rf build
	$(RUNTIME_VENV)/bin/python -m pip install -q --no-deps --force-reinstall .
	rm -rf build

# the server page's test (tests/test_server_page.py) drives a headless Chromium: Debian's chromium and
# chromium-driver, installed once (about 30 s) when chromedriver is not already on PATH
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromedriver >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; }

demo: install
	$(VENV)/bin/vlmforge demo

# two workers, each taking whole test files (so their module fixtures export once). PYTHONSAFEPATH:
# the repository root is not on sys.path, so its kernels/ folder never shadows the `kernels`
# package transformers ≥ 5.25 imports
test: install runtime-env browser
	PYTHONSAFEPATH=1 VLMFORGE_RUNTIME_VENV=$(RUNTIME_VENV) $(PY) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache build
