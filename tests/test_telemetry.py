"""OpenTelemetry traces: a loopback OTLP/HTTP receiver decodes what llmctl exports (protobuf, via
opentelemetry-proto) and the test checks the span tree and its attributes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from cli import invoke
from openai_server import Reply

from llmctl.workspace import Workspace

QUESTION = "How many daily snapshots are kept?"


class Receiver:
    """OTLP/HTTP on 127.0.0.1: POST /v1/traces, an ExportTraceServiceRequest in protobuf."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.paths.append(self.path)
                receiver.spans += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = ([getattr(x, x.WhichOneof("value")) for x in v.array_value.values] if kind == "array_value"
                       else getattr(v, kind))
    return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.mark.parametrize("store_prompts", [False, True])
def test_a_query_is_one_trace_with_a_span_per_stage_and_per_model_attempt(tmp_path, data, fake_llm, receiver,
                                                                         store_prompts):
    fake_llm.script.extend([Reply(kind="status", status=500), Reply(text="Seven daily snapshots [1].")])
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({
        "rerank": {"enabled": False}, "telemetry": {"otlp_endpoint": receiver.url},
        "llm": {"store_prompts": store_prompts, "backoff_base": 0.01, "providers": [
            {"name": "local", "base_url": fake_llm.base_url, "model": "tiny", "retries": 1,
             "price_input_per_1m": 1.0, "price_output_per_1m": 2.0}]}}))
    ws = Workspace(config_path=cfg, data_dir=data)
    try:
        result = ws.query(QUESTION)
        assert result.error is None and result.completion.text.startswith("Seven")
        again = ws.query(QUESTION)  # the exact cache: a second trace, its attempt a cache hit
        assert again.completion.cache == "exact"
    finally:
        ws.close()

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    traces: dict[bytes, list] = {}
    for s in receiver.spans:
        traces.setdefault(s.trace_id, []).append(s)
    assert len(traces) == 2
    first, second = sorted(traces.values(), key=lambda spans: min(s.start_time_unix_nano for s in spans))
    [root] = [s for s in first if not s.parent_span_id]
    assert root.name == "llmctl.query"
    children = {s.name: s for s in first if s.parent_span_id == root.span_id}
    assert {"embed", "dense", "bm25", "fusion", "pack", "chat tiny"} <= set(children), sorted(children)
    chats = [s for s in first if s.name == "chat tiny"]
    assert [attrs(s).get("error.type") for s in chats] == ["server", None]  # the 500, then the retry
    ok = attrs(chats[-1])
    assert ok["gen_ai.operation.name"] == "chat" and ok["gen_ai.request.model"] == "tiny"
    assert ok["gen_ai.provider.name"] == "local" and ok["gen_ai.usage.output_tokens"] > 0
    assert ok["gen_ai.usage.input_tokens"] > 0 and ok["llmctl.cost_usd"] > 0 and ok["llmctl.cache_hit"] is False
    failed = attrs(chats[0])
    assert failed["llmctl.status"] == "error" and chats[0].status.code == 2  # STATUS_CODE_ERROR
    dense = attrs(children["dense"])
    assert dense["llmctl.retrieval.k"] == 100 and dense["llmctl.retrieval.hits"] > 0
    assert len(dense["llmctl.retrieval.top_scores"]) == 3
    assert attrs(children["fusion"])["llmctl.retrieval.fusion"] == "zscore"
    assert attrs(root)["llmctl.retrieval.hits"] == len(result.hits)
    [hit] = [s for s in second if s.name.startswith("chat ")]
    assert attrs(hit)["llmctl.cache_hit"] is True and attrs(hit)["llmctl.cache"] == "exact"

    texts = [str(v) for s in receiver.spans for v in attrs(s).values()]
    chunk_words = result.hits[0].chunk["text"].split()[:8]
    assert not any(" ".join(chunk_words) in t for t in texts)  # no document text, ever
    assert any(QUESTION in t for t in texts) == store_prompts  # the question only when prompts are stored


def test_each_eval_case_is_one_trace_with_its_retrieval_and_its_answer(tmp_path, data, fake_llm, receiver):
    """The answer is asked later, on a worker thread: it still joins its case's trace."""
    fake_llm.script.extend([Reply(text="Seven daily snapshots [1]."), Reply(text="Thirty days [1].")])
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({
        "rerank": {"enabled": False}, "telemetry": {"otlp_endpoint": receiver.url},
        "llm": {"cache": {"enabled": False}, "providers": [
            {"name": "local", "base_url": fake_llm.base_url, "model": "tiny", "retries": 0}]}}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "two", "cases": [
        {"id": "daily", "query": QUESTION, "expected": ["guides/retention-policies.md"],
         "answer": {"contains": ["daily"]}},
        {"id": "keys", "query": "How long are encryption keys kept?", "expected": ["guides/encryption.md"],
         "answer": {"contains": ["days"]}}]}))
    with Workspace(config_path=cfg, data_dir=data) as ws:
        ws.evaluate(suite)

    traces: dict[bytes, list] = {}
    for s in receiver.spans:
        traces.setdefault(s.trace_id, []).append(s)
    assert len(traces) == 2
    for spans in traces.values():
        [root] = [s for s in spans if not s.parent_span_id]
        assert root.name == "llmctl.eval_case" and attrs(root)["llmctl.suite"] == "two"
        names = {s.name for s in spans if s.parent_span_id == root.span_id}
        assert {"embed", "dense", "bm25", "fusion", "chat tiny"} <= names, sorted(names)
    assert sorted(attrs(r)["llmctl.case"] for spans in traces.values() for r in spans if not r.parent_span_id) \
        == ["daily", "keys"]


def test_telemetry_off_imports_no_opentelemetry():
    code = ("import sys, llmctl.cli, llmctl.workspace, llmctl.search.pipeline, llmctl.llm.gateway, llmctl.telemetry; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_collector_that_is_down_costs_one_warning_line_and_no_answer(tmp_path, data):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False},
                                   "telemetry": {"otlp_endpoint": f"http://127.0.0.1:{port}", "timeout": 1}}))
    r = invoke("--config", cfg, "--data-dir", data, "query", "--no-llm", QUESTION)
    assert r.returncode == 0 and "retention-policies.md" in r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "telemetry" in ln.lower() or "export" in ln.lower()]
    assert len(lines) == 1 and "traces are not reaching" in lines[0] and "Traceback" not in r.stderr, r.stderr

    cfg.write_text(yaml.safe_dump({"telemetry": {"otlp_endpoint": f"127.0.0.1:{port}"}}))
    r = invoke("--config", cfg, "--data-dir", data, "query", "--no-llm", QUESTION)
    assert r.returncode == 3 and "'telemetry.otlp_endpoint' must be an http:// or https:// URL" in r.stderr
    for bad in ("http://", "http://127.0.0.1:notaport", "http://[::1"):
        cfg.write_text(yaml.safe_dump({"telemetry": {"otlp_endpoint": bad}}))
        r = invoke("--config", cfg, "--data-dir", data, "query", "--no-llm", QUESTION)
        assert r.returncode == 3 and "with a host" in r.stderr, (bad, r.stderr)


def test_after_a_failed_export_traces_rest_instead_of_waiting_on_every_trace():
    from opentelemetry.sdk.trace.export import SpanExportResult

    from llmctl.telemetry import _resting

    class Dead:  # an exporter whose collector is down: every try costs telemetry.timeout
        tries = 0

        def export(self, spans):
            Dead.tries += 1
            return SpanExportResult.FAILURE

    exporter = _resting(Dead)()
    assert [exporter.export([]) for _ in range(5)] == [SpanExportResult.FAILURE] * 5
    assert Dead.tries == 1  # one wait, then a minute of dropped traces
