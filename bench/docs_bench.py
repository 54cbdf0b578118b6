"""Retrieval on real documentation: the Python 3.11 docs, as HTML and as reST. Measured, never asserted.

Corpus: Debian's `python3.11-doc` package (from the Debian registry with `apt-get download`,
unpacked with `dpkg-deb -x`; no root needed): the tutorial/, howto/, faq/ and using/ pages,
once as the built HTML (Sphinx pages with navigation bars, sidebars and footers) and once as
their reST sources (`_sources/*.rst.txt`, saved as .rst). Questions: bench/docs_questions.yaml,
written before any run.

Per format and per stage (bm25, dense, hybrid; reranked when a cross-encoder is configured),
page level: hit@1, hit@3, MRR@10 (from `llmctl eval`). From `llmctl query --json -k 3`: how
many top-3 chunks are boilerplate (page chrome: "Previous topic", "Table of Contents",
"Show Source"...; or, in reST, a chunk with fewer than 8 words of text once labels and
directive lines are removed), whether a top-3 chunk sits under the expected section, and the
confidence llmctl reports for answerable and for absent questions.

    python bench/docs_bench.py --label after      # bench/out/docs-after.json
    # the code before a change, from a worktree:
    git worktree add /tmp/llmctl-before <rev>
    PYTHONPATH=/tmp/llmctl-before python bench/docs_bench.py --label before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
PAGES = ("tutorial", "howto", "faq", "using")
CHROME = ("previous topic", "next topic", "table of contents", "show source", "report a bug",
          "quick search", "this page", "theme auto light dark", "navigation index modules")


def corpus(fmt: str) -> Path:
    """bench/out/pydoc/<fmt>: the pages, fetched and unpacked once."""
    root = OUT / "pydoc"
    html = root / "x" / "usr" / "share" / "doc" / "python3.11" / "html"
    if not html.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=root, check=True)
        deb = next(root.glob("python3.11-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "x")], check=True)
    out = root / fmt
    if not out.is_dir():
        tmp = root / f"{fmt}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for part in PAGES:
            (tmp / part).mkdir(parents=True)
            if fmt == "html":
                for f in (html / part).glob("*.html"):
                    shutil.copy(f, tmp / part / f.name)
            else:
                for f in (html / "_sources" / part).glob("*.rst.txt"):
                    shutil.copy(f, tmp / part / f.name.removesuffix(".txt"))
        tmp.rename(out)
    return out


SETTINGS: dict[str, str] = {}  # --set KEY=VALUE: LLMCTL_ environment overrides for a variant


def llmctl(args: list[str], cwd: Path, data: Path, out: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"} | SETTINGS
    cmd = [sys.executable, "-m", "llmctl", "--data-dir", str(data), *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode not in (0, 9):
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return json.loads(out.read_text() if out else r.stdout)


def boilerplate(text: str, fmt: str) -> bool:
    low = " ".join(text.lower().split())
    if any(c in low for c in CHROME):
        return True
    prose = [ln for ln in text.splitlines() if not re.match(r"\s*(\.\. |[=\-~^\"'`#*+]{3,}\s*$)", ln)]
    return len(re.findall(r"\w+", " ".join(prose))) < 8


def run_format(fmt: str, label: str, questions: dict) -> dict:
    src = corpus(fmt)
    ext = ".html" if fmt == "html" else ".rst"
    data = OUT / "docs" / f"{label}-{fmt}"
    t = time.perf_counter()
    ingest = llmctl(["ingest", ".", "--json"], src, data)
    ingest_s = time.perf_counter() - t
    cases = [{"id": f"q{i:02d}", "query": q["q"], "expected": [q["page"] + ext]}
             for i, q in enumerate(questions["questions"], start=1)]
    suite = {"name": f"pydocs-{fmt}", "metrics": ["hit@1", "hit@3", "mrr@10"], "cases": cases}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(yaml.safe_dump(suite))
        report = llmctl(["eval", str(path), "-q", "--json-file", str(Path(tmp) / "r.json")], src, data,
                        Path(tmp) / "r.json")
    per_stage = {s: {m: round(v, 4) for m, v in ms.items()} for s, ms in report["metrics"].items()}
    top3, in_section, content_at_1, conf_answerable, conf_absent = 0, 0, 0, [], []
    examples = []
    for q in questions["questions"]:
        hits = llmctl(["query", q["q"], "--no-llm", "-k", "3", "--json"], src, data)
        chrome = [boilerplate(h["text"], fmt) for h in hits["hits"]]
        top3 += sum(chrome)
        words = q.get("section", "").lower()
        # the expected section's own text (a table of contents naming it does not count)
        in_section += any(words and words in (h["heading"] + " " + h["text"][:300]).lower() and not bad
                          and h["source"].startswith(q["page"]) for h, bad in zip(hits["hits"], chrome, strict=True))
        content_at_1 += bool(hits["hits"]) and hits["hits"][0]["source"].startswith(q["page"]) and not chrome[0]
        conf_answerable.append(hits.get("confidence"))
        if hits["hits"] and not hits["hits"][0]["source"].startswith(q["page"]):
            examples.append({"q": q["q"], "top1": hits["hits"][0]["location"],
                             "top1_text": hits["hits"][0]["text"][:160]})
    for q in questions["absent"]:
        conf_absent.append(llmctl(["query", q, "--no-llm", "-k", "3", "--json"], src, data).get("confidence"))
    n = len(questions["questions"])
    return {
        "format": fmt, "files": ingest["files"]["seen"], "chunks": ingest["chunks"]["total"],
        "ingest_s": round(ingest_s, 1),
        "stages": per_stage, "questions": n,
        "boilerplate_in_top3": top3, "top3_slots": 3 * n, "expected_section_in_top3": in_section,
        "content_hit_at_1": content_at_1,
        "confidence": {"answerable": conf_answerable, "absent": conf_absent},
        "missed_at_1": examples,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="after")
    ap.add_argument("--formats", default="html,rst")
    ap.add_argument("--set", action="append", default=[], metavar="LLMCTL_KEY=VALUE")
    a = ap.parse_args()
    SETTINGS.update(kv.split("=", 1) for kv in a.set)
    questions = yaml.safe_load((REPO / "bench" / "docs_questions.yaml").read_text())
    import llmctl as code

    result = {"label": a.label, "code": str(Path(code.__file__).parent.parent.name), "settings": SETTINGS,
              "formats": {}}
    for fmt in a.formats.split(","):
        result["formats"][fmt] = r = run_format(fmt, a.label, questions)
        print(fmt, json.dumps({k: r[k] for k in ("stages", "boilerplate_in_top3", "expected_section_in_top3",
                                                 "content_hit_at_1")}),
              flush=True)
    (OUT / f"docs-{a.label}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
