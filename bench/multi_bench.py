"""Retrieval across several corpora: which fusion, duplicate handling and page evidence hold up.

Corpora (none committed; fetched and laid out here, cached under $MULTI_BENCH_DIR, default
bench/out/multi):

- ``scifact``: 1,000 SciFact abstracts (../shared/data/scifact, BEIR): the documents judged
  relevant for the first 400 training queries (by id) plus random others (seed 0); those queries.
- ``pydocs``: Python 3.11 tutorial/howto/faq/using HTML (Debian's python3.11-doc), with
  bench/docs_questions.yaml's 50 questions.
- ``postgresql``: 238 pages of the PostgreSQL 15 manual (Debian's postgresql-doc-15), questions in
  bench/corpora/postgresql/questions.yaml.
- ``apache``: the Apache httpd 2.4 manual in English, 232 pages (Debian's apache2-doc, without
  developer/), questions in bench/corpora/apache/questions.yaml.

Debian packages come through the Debian registry: ``apt-get download NAME`` and ``dpkg-deb -x``
(no root needed). Each corpus is ingested once with llmctl's defaults (in process, the
Workspace API) and reused while its files are unchanged.

For every question the product's own retrieval runs once (``Retriever``: dense top 100, BM25 over
every chunk, top 100, and the z-score inputs ``Retriever.scored`` gives the pipeline). Every
fusion setting is then applied to those same candidates, so settings differ only in fusion and
what follows it. Metrics are page level (a page is a file; a SciFact abstract is a page): hits are
read in order and each contributes the pages not seen before (a collapsed duplicate contributes
its ``also_in`` pages at the same rank); hit@1, hit@3 and MRR@10 over those ranks.

Questions split into a tune and a check half before any run (by position in the YAML: 1st, 3rd,
... tune; SciFact by query id parity). Settings are chosen on tune, reported on both; per-question
differences are tested with llmctl's paired bootstrap (MRR@10) and a sign test (hit@1).

    python bench/multi_bench.py                       # bench/out/multi.json + a table
    python bench/multi_bench.py --corpora apache,pydocs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
CACHE = Path(os.environ.get("MULTI_BENCH_DIR") or OUT / "multi")
SCIFACT = Path(os.environ.get("SCIFACT_DIR") or REPO.parent / "shared" / "data" / "scifact")

PG_PAGES = re.compile(
    r"^(tutorial|ddl|dml|queries|datatype|indexes|mvcc|transaction-iso|explicit-locking|runtime-config|auth-"
    r"|client-authentication|backup|app-|plpgsql|wal|routine|performance-tips|populate|using-explain|textsearch"
    r"|sql-(select|insert|update|delete|createtable|altertable|createindex|vacuum|analyze|copy|createrole"
    r"|alterrole|grant|revoke|createfunction|createprocedure|explain|createview|creatematerializedview"
    r"|refreshmaterializedview|createtrigger|begin|set|show|truncate|cluster|reindex|createdatabase"
    r"|createextension|createsequence|createschema|merge|lock|listen|notify|createpolicy|createpublication"
    r"|createsubscription|altersystem|droptable|prepare|do)\.html)")


# -- corpora ---------------------------------------------------------------------------------
def debian(package: str) -> Path:
    """The package's files, downloaded and unpacked once (CACHE/deb/<package>/usr/...)."""
    root = CACHE / "deb" / package
    if not (root / "usr").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=root, check=True)
        deb = next(root.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        deb.unlink()
    return root / "usr" / "share" / "doc"


def laid_out(name: str, copy) -> Path:
    """CACHE/<name>/files, made once by ``copy(tmp_dir)``."""
    out = CACHE / name / "files"
    if not out.is_dir():
        tmp = CACHE / name / "files.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        copy(tmp)
        tmp.rename(out)
    return out


def html_questions(path: Path, key: str = "pages") -> list[dict]:
    qs = yaml.safe_load(path.read_text())["questions"]
    return [{"id": f"q{i:02d}", "q": q["q"], "half": "tune" if i % 2 else "check",
             "pages": [p + ".html" for p in (q[key] if isinstance(q[key], list) else [q[key]])]}
            for i, q in enumerate(qs, start=1)]


def corpus_postgresql() -> tuple[Path, list[dict]]:
    html = debian("postgresql-doc-15") / "postgresql-doc-15" / "html"

    def copy(tmp: Path) -> None:
        for f in sorted(html.glob("*.html")):
            if PG_PAGES.match(f.name):
                shutil.copy(f, tmp / f.name)
    return laid_out("postgresql", copy), html_questions(REPO / "bench" / "corpora" / "postgresql" / "questions.yaml")


def corpus_apache() -> tuple[Path, list[dict]]:
    en = debian("apache2-doc") / "apache2-doc" / "manual" / "en"

    def copy(tmp: Path) -> None:
        for f in sorted(en.rglob("*.html")):
            rel = f.relative_to(en)
            if rel.parts[0] != "developer":
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, tmp / rel)
    return laid_out("apache", copy), html_questions(REPO / "bench" / "corpora" / "apache" / "questions.yaml")


def corpus_pydocs() -> tuple[Path, list[dict]]:
    html = debian("python3.11-doc") / "python3.11" / "html"

    def copy(tmp: Path) -> None:
        for part in ("tutorial", "howto", "faq", "using"):
            (tmp / part).mkdir()
            for f in (html / part).glob("*.html"):
                shutil.copy(f, tmp / part / f.name)
    return laid_out("pydocs", copy), html_questions(REPO / "bench" / "docs_questions.yaml", key="page")


def corpus_scifact(n_docs: int = 1000, n_queries: int = 400) -> tuple[Path, list[dict]]:
    from llmctl.evals.beir import load_beir

    _, suite = load_beir(SCIFACT, "train")
    cases = sorted(suite.cases, key=lambda c: int(c.id))[:n_queries]
    relevant = {g.source.split("#", 1)[-1] for c in cases for g in c.expected}
    docs = {}
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            d = json.loads(line)
            docs[str(d["_id"])] = line
    others = sorted(set(docs) - relevant)
    keep = sorted(relevant | set(random.Random(0).sample(others, max(0, n_docs - len(relevant)))))

    def copy(tmp: Path) -> None:
        (tmp / "corpus.jsonl").write_text("".join(docs[d] for d in keep))
    questions = [{"id": c.id, "q": c.query, "half": "tune" if int(c.id) % 2 == 0 else "check",
                  "pages": [f"corpus.jsonl#{g.source.split('#', 1)[-1]}" for g in c.expected]} for c in cases]
    return laid_out("scifact", copy), questions


CORPORA = {"scifact": corpus_scifact, "pydocs": corpus_pydocs, "postgresql": corpus_postgresql,
           "apache": corpus_apache}


CANDIDATES_FORMAT = 2  # bump when candidates() records something new
REUSE = False


# -- candidates, once per question ---------------------------------------------------------------
def candidates(name: str, files: Path, questions: list[dict], index: str = "index",
               overrides: dict | None = None) -> list[dict]:
    """Ingest (incremental: a no-op when nothing changed), then each question's candidates as the
    product retrieves them. ``index``/``overrides``: another index of the same files, built with
    those settings (bench/chunk_size.py)."""
    import hashlib
    import pickle

    from llmctl.workspace import Workspace

    ws = Workspace(data_dir=str(CACHE / name / index), **(overrides or {}))
    ws.cfg.base_dir = files
    saved = CACHE / name / ("candidates.pkl" if index == "index" else f"candidates-{index}.pkl")
    if REUSE and saved.exists():  # --reuse: the candidates of the last run, whatever changed since
        got = pickle.loads(saved.read_bytes())
        if [(q["id"], q["q"], q["pages"]) for q in got["data"]] == [(q["id"], q["q"], q["pages"]) for q in questions]:
            return got["data"]
    t = time.perf_counter()
    ws.ingest([files], wait_seconds=3600)
    print(f"{name}: ingest {time.perf_counter() - t:.0f}s", flush=True)
    key = hashlib.sha256(json.dumps([ws.data.version(), [(q["id"], q["q"], q["pages"]) for q in questions],
                                     CANDIDATES_FORMAT]).encode()).hexdigest()
    if saved.exists():
        got = pickle.loads(saved.read_bytes())
        if got["key"] == key:
            return got["data"]
    r = ws.retriever
    r.embedder.load()
    cfg = r.cfg.retrieval
    out = []
    for q in questions:
        vector = r.embed(q["q"])
        dense = r.dense(vector, cfg.dense_k, None)
        bm25_all = r.sparse_scores(q["q"], None)
        sparse = r.top(bm25_all, cfg.bm25_k)
        lists = {"bm25": sparse, "dense": dense}
        scores, stats = r.scored(vector, lists, bm25_all, None)
        ids = sorted({i for lst in lists.values() for i, _ in lst})
        chunks = r.chunks(ids)
        out.append({**q, "bm25": sparse, "dense": dense, "scores": scores, "stats": stats,
                    "chunks": {i: {"doc": c["doc_id"], "text": c["text"], "embed_text": c.get("embed_text", "")}
                               for i, c in chunks.items()},
                    "titles": {}})
    docs = {c["doc"] for q in out for c in q["chunks"].values()}
    titles = dict(r.manifest.db.execute(
        f"SELECT doc_id, title FROM documents WHERE doc_id IN ({','.join('?' * len(docs))})", sorted(docs)).fetchall())
    for q in out:
        q["titles"] = titles
    # page evidence: each page's head (title and first lines, the product's index/pages.py) against
    # the question. BM25: the product's own page index and z-scores. Dense (not shipped: it needs a
    # vector per page): the heads embedded here, as z-scores over the corpus's pages.
    from llmctl.index.pages import PageScores, head

    page_scores = PageScores.load(ws.data.pages)
    assert page_scores is not None, "ingest builds the page index"
    rows = list(r.manifest.page_heads())
    pages, heads = [d for d, _, _ in rows], [head(t, text) for _, t, text in rows]
    pvec = np.asarray(r.embedder.embed_documents(heads), dtype=np.float32)
    for q in out:
        want = {c["doc"] for c in q["chunks"].values()}
        zb = page_scores.zscores(q["q"], want)
        de = pvec @ np.asarray(r.embed(q["q"]), dtype=np.float32)
        zd = (de - de.mean()) / max(float(de.std()), 1e-9)
        q["page_z"] = {d: (zb.get(d, 0.0), float(zd[i])) for i, d in enumerate(pages) if d in want}
    ws.close()
    saved.write_bytes(pickle.dumps({"key": key, "data": out}))
    return out


# -- settings ----------------------------------------------------------------------------------
def setting_fns():
    from llmctl.search import fusion as F

    def z(w, **kw):
        return lambda q: F.fuse_zscore(q["scores"], q["stats"], {"bm25": w, "dense": 1 - w}, **kw)

    def rrf(k, w=0.5):
        return lambda q: F.fuse_rrf({"bm25": q["bm25"], "dense": q["dense"]}, k, {"bm25": w, "dense": 1 - w})

    def weighted(w):
        return lambda q: F.fuse_weighted({"bm25": q["bm25"], "dense": q["dense"]}, {"bm25": w, "dense": 1 - w})

    s = {"bm25": lambda q: q["bm25"], "dense": lambda q: q["dense"]}
    for w in (0.1, 0.2, 0.3, 0.4, 0.5):
        s[f"zscore w={w}"] = z(w)
    for cap in (4.0, 6.0, 8.0):
        for w in (0.3, 0.4, 0.5):
            s[f"zscore w={w} cap={cap:g}"] = z(w, cap=cap)
    for w in (0.3, 0.4, 0.5):
        s[f"zscore w={w} support"] = z(w, support=2.0)
    for k in (10, 60):
        for w in (0.3, 0.4, 0.5):
            s[f"rrf k={k} w={w}"] = rrf(k, w)
    for w in (0.3, 0.4):
        s[f"weighted max w={w}"] = weighted(w)
    return s


DEFAULT = "zscore w=0.2"  # the shipped default (retrieval.fusion zscore, BM25 weight 0.2)


# -- what follows fusion -----------------------------------------------------------------------
def page_slots(q: dict, ranked: list[tuple[str, float]], collapse: bool, page_bonus: float = 0.0,
               title_weight: float = 0.0, title_mode: str = "both") -> list[set[str]]:
    """The pages each of the first hits adds (in order, a page once), after the optional duplicate
    collapsing and page evidence."""
    from llmctl.search import fusion as F

    chunks = q["chunks"]
    ranked = [(c, s) for c, s in ranked if c in chunks]
    if page_bonus:
        ranked = F.page_evidence(ranked, {c: chunks[c]["doc"] for c, _ in ranked}, page_bonus)
    if title_weight:
        pz = q["page_z"]
        wb = {"both": 0.3, "bm25": 1.0, "dense": 0.0}[title_mode]
        ranked = sorted(((c, s + title_weight * (wb * pz[chunks[c]["doc"]][0] + (1 - wb) * pz[chunks[c]["doc"]][1]))
                         for c, s in ranked), key=lambda kv: (-kv[1], kv[0]))
    order = [c for c, _ in ranked]
    if collapse:
        groups = F.collapse(order[:60], lambda c: chunks[c]["text"], 12)
    else:
        groups = [(c, []) for c in order[:12]]
    seen: set[str] = set()
    slots = []
    for c, dups in groups:
        pages = {chunks[c]["doc"], *(chunks[d]["doc"] for d in dups)} - seen
        if pages:
            seen |= pages
            slots.append(pages)
    return slots


def metrics(slots: list[set[str]], accepted: set[str]) -> dict[str, float]:
    rank = next((i for i, p in enumerate(slots[:10], start=1) if p & accepted), None)
    return {"hit@1": float(rank == 1), "hit@3": float(rank is not None and rank <= 3),
            "mrr@10": 1.0 / rank if rank else 0.0}


def sign_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact sign test p-value on paired 0/1 outcomes."""
    wins, losses = int(((a - b) > 0).sum()), int(((a - b) < 0).sum())
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def evaluate(data: dict[str, list[dict]], variants: dict) -> dict:
    """variants: name -> (fusion name, collapse, page_bonus, title_weight) -> per corpus, per half,
    metrics and per-question arrays."""
    fns = setting_fns()
    res: dict = {}
    for vname, (fname, collapse, bonus, title, *mode) in variants.items():
        res[vname] = {}
        for corpus, qs in data.items():
            per = [metrics(page_slots(q, fns[fname](q), collapse, bonus, title, *mode), set(q["pages"]))
                   for q in qs]
            res[vname][corpus] = {"per": per, "half": [q["half"] for q in qs]}
    return res


def summary(entry: dict, half: str | None) -> dict[str, float]:
    rows = [p for p, h in zip(entry["per"], entry["half"], strict=True) if half is None or h == half]
    return {m: round(float(np.mean([r[m] for r in rows])), 4) for m in ("hit@1", "hit@3", "mrr@10")}


def arrays(entry: dict, half: str | None, m: str) -> np.ndarray:
    return np.array([p[m] for p, h in zip(entry["per"], entry["half"], strict=True) if half is None or h == half])


def choose(res: dict, corpora: list[str], candidates_: list[str], half: str = "tune") -> tuple[str, dict]:
    """The setting with the best mean MRR@10 over corpora (tune half) among those not
    significantly worse (bootstrap p < 0.05 on MRR@10, or sign test p < 0.05 on hit@1) than any
    corpus's best single setting."""
    from llmctl.stats import paired_bootstrap

    best_of = {c: max(candidates_, key=lambda v: summary(res[v][c], half)["mrr@10"]) for c in corpora}
    table = {}
    for v in candidates_:
        mean = float(np.mean([summary(res[v][c], half)["mrr@10"] for c in corpora]))
        worse = []
        for c in corpora:
            b = best_of[c]
            if b == v:
                continue
            t = paired_bootstrap(arrays(res[v][c], half, "mrr@10") - arrays(res[b][c], half, "mrr@10"))
            p_sign = sign_test(arrays(res[v][c], half, "hit@1"), arrays(res[b][c], half, "hit@1"))
            if (t["delta"] < 0 and t["p_value"] < 0.05) or (p_sign < 0.05 and
                                                             arrays(res[v][c], half, "hit@1").mean()
                                                             < arrays(res[b][c], half, "hit@1").mean()):
                worse.append(c)
        table[v] = {"mean_mrr@10": round(mean, 4), "significantly_worse_than_best_on": worse}
    ok = [v for v in candidates_ if not table[v]["significantly_worse_than_best_on"]]
    pick = max(ok or candidates_, key=lambda v: table[v]["mean_mrr@10"])
    return pick, {"best_single_per_corpus": best_of, "table": table}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default=",".join(CORPORA))
    ap.add_argument("--reuse", action="store_true", help="the last run's candidates, without syncing the index")
    a = ap.parse_args()
    global REUSE
    REUSE = a.reuse
    names = a.corpora.split(",")
    data = {}
    for name in names:
        files, questions = CORPORA[name]()
        t = time.perf_counter()
        data[name] = candidates(name, files, questions)
        print(f"{name}: {len(questions)} questions retrieved in {time.perf_counter() - t:.0f}s", flush=True)

    fusions = list(setting_fns())
    variants = {f: (f, False, 0.0, 0.0) for f in fusions}
    res = evaluate(data, variants)
    fused = [f for f in fusions if f not in ("bm25", "dense")]
    pick, why = choose(res, names, fused)
    # what follows fusion, on the default and on the pick
    extra = {}
    for base in dict.fromkeys((DEFAULT, pick)):
        extra[f"{base} +collapse"] = (base, True, 0.0, 0.0)
        for bonus in (0.1, 0.25, 0.5):
            extra[f"{base} +collapse +page {bonus:g}"] = (base, True, bonus, 0.0)
        for title in (0.1, 0.2, 0.4):
            extra[f"{base} +collapse +title {title:g}"] = (base, True, 0.0, title)
            extra[f"{base} +collapse +title-bm25 {title:g}"] = (base, True, 0.0, title, "bm25")
    res.update(evaluate(data, extra))

    report = {"corpora": {n: {"questions": len(data[n]), "tune": sum(q["half"] == "tune" for q in data[n])}
                          for n in names},
              "default": DEFAULT, "chosen_on_tune": pick, "choice": why, "results": {}}
    from llmctl.stats import paired_bootstrap

    for v, per_corpus in res.items():
        report["results"][v] = {}
        for c, entry in per_corpus.items():
            row = {h: summary(entry, None if h == "all" else h) for h in ("tune", "check", "all")}
            if v != DEFAULT:
                for h in ("tune", "check"):
                    t = paired_bootstrap(arrays(entry, h, "mrr@10") - arrays(res[DEFAULT][c], h, "mrr@10"))
                    row[h]["vs_default_mrr"] = {"delta": round(t["delta"], 4), "p": t["p_value"]}
                    row[h]["vs_default_hit1_sign_p"] = round(sign_test(arrays(entry, h, "hit@1"),
                                                                   arrays(res[DEFAULT][c], h, "hit@1")), 4)
            report["results"][v][c] = row
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "multi.json").write_text(json.dumps(report, indent=1))
    print(f"\nchosen on tune: {pick}")
    head = "".join(f"| {c} tune h1/h3/mrr | {c} check h1/h3/mrr " for c in names)
    print(f"| setting {head}| mean mrr tune | mean mrr check |")
    for v, per_corpus in report["results"].items():
        cells = "".join(f"| {r['tune']['hit@1']:.2f}/{r['tune']['hit@3']:.2f}/{r['tune']['mrr@10']:.3f} "
                        f"| {r['check']['hit@1']:.2f}/{r['check']['hit@3']:.2f}/{r['check']['mrr@10']:.3f} "
                        for r in per_corpus.values())
        mt = np.mean([r["tune"]["mrr@10"] for r in per_corpus.values()])
        mc = np.mean([r["check"]["mrr@10"] for r in per_corpus.values()])
        print(f"| {v} {cells}| {mt:.3f} | {mc:.3f} |")


if __name__ == "__main__":
    main()
