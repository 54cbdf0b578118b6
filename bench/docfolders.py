"""Debian documentation folders (/usr/share/doc/PACKAGE): what ingest reads and what it skips,
and one question each whose answer is in a file an older llmctl skipped. Measured, never asserted.

Those folders keep most pages gzipped (page.md.gz, FAQ.txt.gz) and README, AUTHORS, NEWS,
copyright and changelog without an extension. Each folder is ingested into a fresh data dir
with the real pipeline (Workspace.ingest) and the question asked through Workspace.search.

    python bench/docfolders.py                      # this checkout -> bench/out/docfolders.json "after"
    python bench/docfolders.py --label before --src /tmp/llmctl-old --dry-run  # an exported older llmctl

(--dry-run reads and chunks, embeds nothing: enough to count the files an older llmctl skips,
and a file it skips cannot answer the question.)

The folders come from Debian packages: apt-get install valgrind python3-pip-whl bash (their
docs must not be excluded by dpkg's path-exclude).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "docfolders.json"
DOC = Path("/usr/share/doc")

# folder -> (question, the file that answers it, relative to the folder)
CASES = {
    "valgrind": ("How do I load Debian's debian.supp suppression file?", "README.Debian"),
    "python3-pip": ("How do I configure pip to use a custom index URL?", "html/topics/configuration.md.gz"),
    "bash": ("What does bash forbid in restricted shell mode (rbash)?", "RBASH"),
}


def run_folder(folder: Path, question: str, expected: str, data_dir: Path, dry_run: bool = False) -> dict:
    from llmctl import Workspace
    from llmctl.errors import LlmctlError

    files = sum(len(names) for _, _, names in os.walk(folder))
    out: dict = {"files": files}
    ws = Workspace(data_dir=data_dir)
    started = time.perf_counter()
    try:
        report = ws.ingest([folder], dry_run=dry_run)
    except LlmctlError as exc:  # e.g. no file it can read at all
        out.update(error=str(exc).replace(str(folder), folder.name), files_read=0, skipped=files,
                   seconds=round(time.perf_counter() - started, 1))
        return out
    reasons: dict[str, int] = {}
    for s in report.files_skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    skipped_files = sorted(Path(s.path).relative_to(folder).as_posix() for s in report.files_skipped)
    out.update(files_read=len(report.files_added), skipped=len(report.files_skipped), skip_reasons=reasons,
               skipped_files=skipped_files, chunks=report.chunks_added, seconds=round(report.seconds, 1))
    if dry_run:  # files read and skipped only: a skipped file cannot answer anything
        rank = None if expected in skipped_files else "not measured (--dry-run)"
        out.update(question=question, expected=expected, rank=rank)
        return out
    hits = ws.search(question, k=10)
    sources = [h.chunk.get("source", "") for h in hits]
    rank = next((n for n, s in enumerate(sources, start=1) if s.endswith(expected)), None)
    top = hits[0].location() if hits else None
    out.update(question=question, expected=expected, rank=rank, top3=[_short(s, folder) for s in sources[:3]],
               top_hit=_short(top, folder) if top else None)
    ws.close()
    return out


def _short(source: str, folder: Path) -> str:
    """A source without the machine's path above the folder."""
    s = source.replace(str(folder) + "/", "")
    return s.split(folder.name + "/", 1)[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="after")
    ap.add_argument("--src", type=Path, help="import llmctl from here (an exported older version)")
    ap.add_argument("--folders", nargs="*", default=list(CASES))
    ap.add_argument("--dry-run", action="store_true",
                    help="read and chunk, embed nothing: skipped files only (the question is not asked)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.src or REPO))
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="docfolders-"))
    here = os.getcwd()
    os.chdir(work)  # sources are shown relative to the working folder: keep machine paths out
    try:
        for name in args.folders:
            question, expected = CASES[name]
            folder = DOC / name
            if not folder.is_dir():
                print(f"{name}: {folder} is missing; install its Debian package", file=sys.stderr)
                continue
            got = run_folder(folder, question, expected, work / name, dry_run=args.dry_run)
            results.setdefault(args.label, {})[name] = got
            print(json.dumps({name: {k: v for k, v in got.items() if k != "skipped_files"}}), flush=True)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(results, indent=1))  # after each folder: a long run keeps what it did
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
