# Two set-up commands: `make demo` and `make test`. Both create the virtual environment from scratch
# when it is missing, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# tensorflow-cpu: the same TensorFlow without the GPU kernels, faster to install (never install both).
BACKEND_EXTRA ?= tensorflow-cpu
STAMP := $(VENV)/.installed-$(BACKEND_EXTRA)

.PHONY: demo test test-fast install clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[$(BACKEND_EXTRA),export,torch,test,dlib,faiss]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-fr demo

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file on one worker (module
# fixtures are built once). Most of a test's time is single-threaded (tracing, TFLite/ONNX conversion),
# so two workers use both cores of a 2-core machine. TEST_WORKERS=0 runs in one process.
# A worker that dies (e.g. killed for memory) ends the run at once, naming its test: pytest-xdist's
# loadfile scheduler can wait forever for a restarted worker (it did on CI, until the time limit).
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m pytest -q $(XDIST)

test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m pytest -q $(XDIST) -m "not large"

bench: $(STAMP)
	$(PY) benchmarks/inference.py

clean:
	rm -rf $(VENV) build *.egg-info
