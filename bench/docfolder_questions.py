"""Debian doc folders with 24 questions each: the default's page-level quality, and whether release
notes (changelog, NEWS, CHANGES, *ReleaseNotes) should need more evidence to rank.

Folders (as installed under /usr/share/doc: python3-pip, gnupg, util-linux, libxslt1-dev) are
ingested with llmctl's defaults through the Workspace. The questions
(bench/corpora/docfolders/*.yaml) were written by a helper who read the folders before any
retrieval ran; a question counts as found at the first result whose file (or a collapsed
duplicate's) is one of its accepted files. Halves by position: 1st, 3rd, ... tune.

Variants measured: a hit whose files are all release notes (by name) has ``delta`` subtracted from
its fused score before the list is read (z-score units; 0 = the default), for every question or
only for questions that do not ask about changes (``CHANGE``). Settings are read on the tune half;
the check half is reported beside them. Measured, never asserted.

    python bench/docfolder_questions.py [--data /tmp/docq]      # bench/out/docfolder_questions.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
OUT = REPO / "bench" / "out" / "docfolder_questions.json"
QUESTIONS = REPO / "bench" / "corpora" / "docfolders"
DOC = Path("/usr/share/doc")
NOTES = re.compile(r"^(changelog|changes|news|history|release[-_ ]?notes?)([._-].*)?$|releasenotes", re.I)
DELTAS = (0.0, 0.25, 0.5, 1.0, 2.0, 100.0)
# Variant 2 (written before reading the questions): the delta only for questions that do not ask
# about changes (past-tense change verbs, "what's new", "since", a release or version number).
CHANGE = re.compile(r"\b(what('s| is| was)? new|new in|changed|changes|introduced|added|removed|deprecated|dropped"
                    r"|fixed|since|releases?|released|versions?\s*\d|\d+\.\d+|change ?logs?|news|history)\b", re.I)


def is_notes(path: str) -> bool:
    name = re.sub(r"\.(gz|bz2|xz)$", "", path.rsplit("/", 1)[-1])
    return bool(NOTES.search(name))


def candidates(folder: str, data: Path) -> list[dict]:
    from llmctl import Workspace

    spec = yaml.safe_load((QUESTIONS / f"{folder}.yaml").read_text())
    root = f"{DOC / folder}/"
    rows = []
    with Workspace(data_dir=data / folder) as ws:
        ws.ingest([DOC / folder])
        for i, q in enumerate(spec["questions"]):
            hits = ws.search(q["q"], k=40)
            cand = [(h.stages["fused"][1], [s.split(root, 1)[-1] for s in [h.source, *h.chunk.get("also_in", [])]])
                    for h in hits]
            rows.append({"half": "tune" if i % 2 == 0 else "check", "files": set(q["files"]), "cand": cand,
                         "q": q["q"]})
    return rows


def asks_about_changes(question: str) -> bool:
    return bool(CHANGE.search(question))


def scores(rows: list[dict], delta: float, how_to_only: bool = False) -> list[dict]:
    from multi_bench import metrics  # the same page-level hit@1, hit@3 and MRR@10

    out = []
    for r in rows:
        d = 0.0 if how_to_only and asks_about_changes(r["q"]) else delta
        ranked = sorted(r["cand"], key=lambda c: -(c[0] - (d if all(map(is_notes, c[1])) else 0.0)))
        seen: set[str] = set()
        slots = []
        for _, files in ranked:
            new = set(files) - seen
            if new:
                seen |= new
                slots.append(new)
        out.append({"half": r["half"], **metrics(slots, r["files"])})
    return out


def main() -> None:
    from llmctl.stats import paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "bench" / "out" / "docfolders")
    args = ap.parse_args()
    folders = sorted(p.stem for p in QUESTIONS.glob("*.yaml"))
    data = {f: candidates(f, args.data) for f in folders}
    report: dict = {}
    for half in ("tune", "check"):
        for delta, how_to_only in [(d, False) for d in DELTAS] + [(d, True) for d in DELTAS[1:]]:
            row = {}
            for f in folders:
                base = [s for s in scores(data[f], 0.0) if s["half"] == half]
                mine = [s for s in scores(data[f], delta, how_to_only) if s["half"] == half]
                t = paired_bootstrap(np.array([s["mrr@10"] for s in mine]) - np.array([s["mrr@10"] for s in base]))
                row[f] = {m: round(float(np.mean([s[m] for s in mine])), 3) for m in ("hit@1", "hit@3", "mrr@10")}
                row[f].update(delta_mrr=round(t["delta"], 3), p=round(t["p_value"], 3), n=len(mine))
            name = f"{delta:g}{' how-to only' if how_to_only else ''}"
            report.setdefault(half, {})[name] = row
            mean = np.mean([row[f]["mrr@10"] for f in folders])
            cells = " | ".join(f"{f} {row[f]['hit@1']:.2f}/{row[f]['hit@3']:.2f}/{row[f]['mrr@10']:.3f} "
                               f"(Δ{row[f]['delta_mrr']:+.3f} p{row[f]['p']:.2f})" for f in folders)
            print(f"{half} delta {name}: mean MRR@10 {mean:.3f} | {cells}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
