# The two commands of the README: `make serve` (start the stack) and `make test` (run the tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q
export PYTHONUNBUFFERED := 1

.PHONY: chromium kubectl promtool newman lint lint-checks protos serve serve-gpu test test-fast train-all fetch-data bench loadtest clean

$(PY):
	python3 -m venv $(VENV)

# Serving extras only (onnxruntime, no TensorFlow); five services + gateway on CPU under supervisord.
serve: $(PY)
	$(PIP) -e '.[serve]'
	exec $(PY) -m services.stack

# The same stack with onnxruntime-gpu (CUDA 13, NVIDIA driver 580+): CUDA when a GPU is visible, else CPU.
# Its own virtual environment: the GPU wheel writes the same package folder as the CPU one.
GPU_VENV ?= .venv-gpu
serve-gpu:
	test -x $(GPU_VENV)/bin/python || python3 -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --disable-pip-version-check -q -e '.[gpu]'
	exec $(GPU_VENV)/bin/python -m services.stack

# Everything the suite needs (serving, training for the --quick jobs, the real clients and tools), then the whole
# suite. A tool that cannot be installed stops here, named: the suite skips nothing but CUDA without a GPU.
test: $(PY) chromium kubectl promtool newman
	$(PIP) -e '.[serve,train,dev]'
	# TF Serving's own gRPC client for the tests; the tensorflow it asks for is there as tensorflow-cpu
	$(PIP) --no-deps tensorflow-serving-api==2.21.0
	$(MAKE) --no-print-directory lint-checks
	$(PY) -m pytest -q

# ruff on everything (line length, import order, bugbear), mypy on services/ and modelcore/, and commit subjects
# of at most 72 characters (details go in the body) since the rule was set; make test runs them first
RULES_SINCE ?= 931dfd8
lint: $(PY)
	$(PIP) -e '.[serve,dev]'
	$(MAKE) --no-print-directory lint-checks

lint-checks:
	$(PY) -m ruff check .
	$(PY) -m mypy services modelcore
	@git cat-file -e $(RULES_SINCE) 2>/dev/null || { echo "commit $(RULES_SINCE) is not in this clone: subjects not checked"; exit 0; }; \
	  long=$$(git log --format=%s $(RULES_SINCE)..HEAD | awk 'length > 72'); \
	  if [ -n "$$long" ]; then echo "commit subjects over 72 characters:"; echo "$$long"; exit 1; fi

# newman (Postman's runner, from the npm registry) for the Postman collection's test: into tests/.node.
newman:
	@test -x tests/.node/node_modules/.bin/newman || { command -v npm >/dev/null 2>&1 || $(call apt,npm); } && \
	  { test -x tests/.node/node_modules/.bin/newman || \
	    npm install --prefix tests/.node --no-audit --no-fund --silent newman@6.2.2 >/dev/null 2>&1; } || \
	  { echo "newman could not be installed (npm install newman@6.2.2): the Postman test needs it"; exit 1; }

# Debian's packages for the browser test (Chromium: Playwright drives it, and downloads no browser), the deploy
# tests (kubectl kustomize) and the monitoring tests (promtool): installed as root with apt-get, or the run
# stops naming the one missing.
apt = { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
  (apt-get install -y -qq $(1) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(1) >/dev/null)); }
chromium:
	@command -v chromium >/dev/null 2>&1 || $(call apt,chromium) || \
	  { echo "chromium could not be installed (apt-get install chromium): the browser test needs it"; exit 1; }
kubectl:
	@command -v kubectl >/dev/null 2>&1 || $(call apt,kubectl) || \
	  { echo "kubectl could not be installed (apt-get install kubectl): the deploy tests need it"; exit 1; }
promtool:
	@command -v promtool >/dev/null 2>&1 || $(call apt,prometheus) || \
	  { echo "promtool could not be installed (apt-get install prometheus): the monitoring tests need it"; exit 1; }

# The suite without the TensorFlow training jobs (faster when iterating on services).
test-fast: $(PY)
	$(PIP) -e '.[serve,dev]'
	$(PY) -m pytest -q -m "not training"

fetch-data: $(PY)
	$(PIP) -e '.[train]'
	$(PY) -m training.data fetch

# Full training runs of every family (hours on CPU); each writes the next version under exported_models/.
train-all: $(PY)
	$(PIP) -e '.[train]'
	$(PY) -m training all

# Benchmark: starts what it measures on free ports, writes bench/results/<host>/results.{md,json} and mnist.png.
bench: $(PY)
	$(PIP) -e '.[serve,load,train]'
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)); } || \
	  echo "wrk could not be installed: the benchmark uses its aiohttp client"
	$(PY) -m bench.run

# Locust, headless and bounded, against a stack it starts (or LOADTEST_HOST=http://... to target another).
LOADTEST_SECONDS ?= 60
LOADTEST_USERS ?= 20
loadtest: $(PY)
	$(PIP) -e '.[serve,load]'
	$(PY) -m loadtest.run --seconds $(LOADTEST_SECONDS) --users $(LOADTEST_USERS)

clean:
	rm -rf runs/ .pytest_cache

# The gateway's gRPC messages (services/gateway/protos/*.proto) -> the *_pb2*.py modules next to them
protos: $(PY)
	$(PIP) -e '.[serve,dev]'
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. services/gateway/protos/*.proto
