"""Ranking after retrieval: duplicate collapsing, page titles, and the default fusion when a
keyword match has no dense support. In process (Workspace), real embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.ingest.html import html_to_text, page_title
from llmctl.search.fusion import collapse, fuse_zscore
from llmctl.workspace import Workspace

SHARED = ("Configuration files are read from the system directory first, then from the user's home "
          "directory, and last from the repository itself; a later file overrides an earlier one. "
          "Use the --show-origin option to see which file set each value.")


def _workspace(tmp_path: Path, embedder, files: dict[str, str]) -> tuple[Workspace, Path]:
    docs = tmp_path / "docs"
    for name, text in files.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False})
    ws.__dict__["embedder"] = embedder  # the session's model: nothing loaded twice
    ws.ingest([docs])
    return ws, docs


def test_three_identical_chunks_in_three_files_are_one_hit_that_lists_the_other_two(tmp_path, embedder):
    files = {f"{name}.md": f"# {name.title()} command\n\n{SHARED}\n" for name in ("config", "pull", "push")}
    files["remote.md"] = ("# Remote command\n\nRemotes are other copies of the repository that you fetch from "
                          "and push to; each has a name and a URL, stored in the configuration files.\n")
    files["log.md"] = "# Log command\n\nThe log command shows the commit history, newest first.\n"
    ws, _ = _workspace(tmp_path, embedder, files)
    with ws:
        result = ws.query("In which order are configuration files read?", k=3, use_llm=False)
        hits = result.hits
        assert len(hits) == 3
        shared = [h for h in hits if SHARED.split()[0] in h.chunk["text"]]
        assert len(shared) == 1, [h.location() for h in hits]
        also = shared[0].chunk["also_in"]
        assert len(also) == 2
        names = {shared[0].source.rsplit("/", 1)[-1]} | {a.split(":")[0].rsplit("/", 1)[-1] for a in also}
        assert names == {"config.md", "pull.md", "push.md"}
        # the freed slots hold the next distinct chunks
        assert len({h.chunk["text"] for h in hits}) == 3
        out = result.to_dict()["hits"]
        assert [len(h["also_in"]) for h in out].count(2) == 1
        assert all(h["also_in"] == [] for h in out if len(h["also_in"]) != 2)


def test_a_duplicate_at_the_hits_own_place_is_not_listed_as_another(tmp_path, embedder):
    """One long line cut into equal pieces: every piece is long.md:3-3, and the hit said
    'also in: long.md:3-3' of itself."""
    files = {"long.md": "# Zebra crossing manual\n\n" + "Zebra crossings give walkers the right of way. " * 300 + "\n",
             "other.md": "# Other\n\nTraffic lights control the junction.\n"}
    ws, _ = _workspace(tmp_path, embedder, files)
    with ws:
        hits = ws.query("Who has the right of way at a zebra crossing?", k=3, use_llm=False).hits
    long = [h for h in hits if h.source.endswith("long.md") and "right of way" in h.chunk["text"]]
    assert long and all(h.location() not in h.chunk.get("also_in", []) for h in long)


def test_collapse_near_duplicates_keeps_the_best_ranked():
    base = " ".join(f"word{i}" for i in range(60))
    texts = {"a": base, "b": "other text entirely about something else", "c": base + " extra",
             "d": base.replace("word10 ", "x ").replace("word30 ", "y ").replace("word50 ", "z ")}
    groups = collapse(["a", "b", "c", "d"], texts.get)
    assert groups[0][0] == "a" and set(groups[0][1]) == {"c"}  # 1 word more: Jaccard 0.98
    assert [g[0] for g in groups] == ["a", "b", "d"]  # 3 words changed: Jaccard 49/67


def test_collapse_finds_every_group_that_comparing_all_pairs_finds():
    """Only groups sharing a prefix element are compared (prefix filtering): the groups must be those
    of comparing each hit with every kept group, on lists full of near-duplicates and edge cases."""
    import random

    from llmctl.search.fusion import jaccard, shingles

    def all_pairs(order, text_of, limit, t):
        groups, kept, exact = [], [], {}
        for cid in order:
            key = " ".join(text_of(cid).split()).lower()
            sh = shingles(text_of(cid))
            at = exact.get(key, next((i for i, k in enumerate(kept) if jaccard(sh, k) >= t), None))
            if at is not None:
                groups[at][1].append(cid)
            elif limit is None or len(groups) < limit:
                exact[key] = len(groups)
                kept.append(sh)
                groups.append((cid, []))
        return groups

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40)]
    for _ in range(1500):
        bases = [" ".join(rng.choices(vocab, k=rng.randint(0, 40))) for _ in range(rng.randint(1, 6))]
        texts = {}
        for i in range(rng.randint(1, 25)):
            words = rng.choice(bases).split()
            for _ in range(rng.randint(0, 3)):  # a word changed, added or dropped
                if words and rng.random() < 0.5:
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                elif rng.random() < 0.5:
                    words.append(rng.choice(vocab))
                elif words:
                    words.pop()
            texts[f"c{i}"] = " ".join(words) if rng.random() < 0.9 else rng.choice(["", "---", "***", "a b"])
        t, limit = rng.choice([0.5, 0.8, 0.9, 0.95, 1.0]), rng.choice([None, 2, 5])
        assert collapse(list(texts), texts.get, limit, t) == all_pairs(list(texts), texts.get, limit, t), texts


def test_numbered_or_generic_h1_gives_way_to_the_title_element():
    page = ("<html><head><title>The Virtual Table Mechanism Of SQLite</title></head><body>"
            "<h1>1. Overview</h1><p>A virtual table is an object registered with a database connection.</p>"
            "<h1>2. Usage</h1><p>Create one with CREATE VIRTUAL TABLE.</p></body></html>")
    title, text, _ = html_to_text(page)
    assert title == "The Virtual Table Mechanism Of SQLite"
    assert "1. Overview" in text
    assert page_title("Introduction", "Foreign Key Support") == "Foreign Key Support"
    assert page_title("Chapter 11. Indexes", "Chapter 11. Indexes") == "Chapter 11. Indexes"
    assert page_title("Apache Module mod_rewrite", "mod_rewrite - Apache HTTP Server") == "Apache Module mod_rewrite"
    assert page_title("A Quick Tour", "Tour") == "A Quick Tour"  # a capital A is not an appendix number
    assert page_title("", "11.2. Index Types") == "11.2. Index Types"
    assert page_title("1. Overview", "") == "1. Overview"


def test_a_bm25_only_keyword_match_does_not_outrank_a_strong_dense_hit():
    # z-scores as the pipeline computes them: a rare keyword gives a stub BM25 z 14 with a dense
    # z near the corpus mean; the page that answers has a strong dense z and an ordinary BM25 z.
    scores = {"bm25": {"stub": 14.0, "answer": 1.5}, "dense": {"stub": 0.31, "answer": 0.70}}
    stats = {"bm25": (0.0, 1.0), "dense": (0.30, 0.08)}
    from llmctl.config import RetrievalConfig

    w = RetrievalConfig().weight_of_bm25("zscore")
    assert fuse_zscore(scores, stats, {"bm25": w, "dense": 1 - w})[0][0] == "answer"
    # the former default (BM25 weight 0.3, chosen on SciFact alone) ranked the stub first
    assert fuse_zscore(scores, stats, {"bm25": 0.3, "dense": 0.7})[0][0] == "stub"


@pytest.mark.parametrize("fusion", ["zscore"])
def test_the_default_fusion_prefers_the_dense_answer_in_a_real_index(tmp_path, embedder, fusion):
    files = {
        "stub.md": "# xyzzy-frob\n\nxyzzy-frob xyzzy-frob: see the manual. xyzzy-frob.\n",
        "answer.md": ("# Recovering lost work\n\nIf you deleted a branch by mistake, its commits still exist "
                      "for a while: find the commit in the reflog and create a new branch pointing at it.\n"),
        "other.md": "# Tags\n\nA tag names a commit, usually a release.\n",
        "more.md": "# Merging\n\nMerging joins two histories into one commit with two parents.\n",
    }
    ws, _ = _workspace(tmp_path, embedder, files)
    with ws:
        hits = ws.search("I deleted a branch by mistake, how do I get its commits back? (xyzzy-frob)", k=2,
                         fusion=fusion)
        assert hits[0].source.endswith("answer.md"), [h.location() for h in hits]
