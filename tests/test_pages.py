"""Page-level evidence: the page-head index that ingest keeps beside BM25 (index/pages.py), and
its part in the ranking. In process, real embedding model."""

from __future__ import annotations

from pathlib import Path

from llmctl.datadir import DataDir
from llmctl.index import keyword
from llmctl.index.pages import PageScores, head
from llmctl.workspace import Workspace

PAGES = {
    "prune.md": "# kestrel prune\n\nDelete snapshots that the retention policy no longer keeps.\n\n"
                "## Options\n\nThe command reads the repository index, then writes a new one. "
                "Use --dry-run to print what would change, and --verbose for every file.\n",
    "restore.md": "# kestrel restore\n\nCopy files from a snapshot back to disk.\n\n"
                  "## Options\n\nThe command reads the repository index, then the pack files it names. "
                  "Use --target to choose a folder, and --verbose for every file.\n",
    "check.md": "# kestrel check\n\nVerify that the repository is intact.\n\n"
                "## Options\n\nReads every pack file and compares it with the index.\n",
}


def _ingest(tmp_path: Path, embedder, pages: dict[str, str] = PAGES, **settings) -> tuple[Workspace, Path]:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in pages.items():
        (docs / name).write_text(text)
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False, **settings})
    ws.__dict__["embedder"] = embedder
    ws.ingest([docs])
    return ws, docs


def _page_ids(ws: Workspace) -> set[str]:
    return set(keyword.load(DataDir(ws.cfg.data_dir).pages).live_ids())


def _options_chunk(ws: Workspace, name: str) -> str:
    return next(cid for cid, _, source, text in ws.retriever.manifest.chunk_texts()
                if source.endswith(name) and "Options" in text)


def test_a_head_is_the_title_and_the_first_lines_without_headings():
    assert head("kestrel prune", "# kestrel prune\n\nDelete old snapshots.\n  More.\n") == \
        "kestrel prune. Delete old snapshots. More."
    assert len(head("t", "x" * 1000)) == len("t. ") + 300


def test_each_chunk_gets_its_pages_head_score(tmp_path, embedder):
    ws, _ = _ingest(tmp_path, embedder)
    with ws:
        prune, restore = _options_chunk(ws, "prune.md"), _options_chunk(ws, "restore.md")
        tied = [(prune, 1.0), (restore, 1.0)]
        # the two option sections say nearly the same; the page each belongs to decides
        assert [c for c, _ in ws.retriever.page_evidence("delete snapshots the policy does not keep", tied, 0.2)] \
            == [prune, restore]
        ranked = ws.retriever.page_evidence("copy files from a snapshot back to disk", tied, 0.2)
        assert [c for c, _ in ranked] == [restore, prune]
        assert ranked[0][1] > 1.0 > ranked[1][1]  # above the page average, below it
        assert ws.retriever.page_evidence("copy files back to disk", tied, 0.0) == tied  # page_weight 0: off
        assert ws.retriever.page_evidence("zzzunknownword", tied, 0.2) == tied  # no head has a term


def test_the_page_index_follows_every_change_without_a_rebuild(tmp_path, embedder):
    ws, docs = _ingest(tmp_path, embedder)
    with ws:
        assert _page_ids(ws) == {d for d, _ in ws.retriever.manifest.document_sources()}
        assert len(_page_ids(ws)) == 3
    (docs / "restore.md").write_text(PAGES["restore.md"].replace("Copy files from a snapshot back to disk",
                                                                 "Bring back files from a snapshot (zebrafish)"))
    (docs / "check.md").unlink()
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False})
    ws.__dict__["embedder"] = embedder
    with ws:
        report = ws.ingest([docs])
        assert not report.bm25_rebuilt  # the incremental path
        docs_now = {d for d, _ in ws.retriever.manifest.document_sources()}
        assert _page_ids(ws) == docs_now and len(docs_now) == 2
        z = PageScores.load(DataDir(ws.cfg.data_dir).pages).zscores("zebrafish", docs_now)
        best = max(z, key=z.get)
        assert best.endswith("restore.md") or "restore" in best, z
        assert z[best] > 0


def test_an_index_from_before_page_heads_is_searched_without_them_and_gains_them_on_the_next_ingest(
        tmp_path, embedder):
    import shutil

    ws, docs = _ingest(tmp_path, embedder)
    with ws:
        pages = DataDir(ws.cfg.data_dir).pages
    shutil.rmtree(pages)
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False})
    ws.__dict__["embedder"] = embedder
    with ws:
        assert ws.query("copy files back to disk", k=2, use_llm=False).hits  # no page index: no error
        report = ws.ingest([docs])
        assert report.files_unchanged == 3
    assert keyword.current_generation(pages) is not None
