"""The checked-in terminal recordings (docs/recordings/) show what they claim (issue 30).

docs/recordings/ingest-1000-files.txt is tmux capture-pane output of ``llmctl ingest`` on a
1,000-file folder: the embedding bar has its total (the chunks embedded at the end) and an
ETA while it runs. The live behaviour is checked in a pty by
tests/test_docfolders.py::test_ingest_in_a_terminal_shows_totals_and_an_eta_while_embedding."""

from __future__ import annotations

import re
from pathlib import Path

RECORDING = Path(__file__).resolve().parent.parent / "docs" / "recordings" / "ingest-1000-files.txt"
BAR = re.compile(r"Embedding .*?([\d,]+)/([\d,]+|\?) +(\d+:\d\d:\d\d) +ETA (\d+:\d\d:\d\d|-:--:--)")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_1000_file_ingest_recording_shows_a_total_and_an_eta_while_embedding():
    text = RECORDING.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    for field in ("command:", "date:", "machine:"):
        assert any(field in line for line in header), field
    assert "/tmp/" not in text and "/home/" not in text and "/root" not in text  # no machine paths
    assert re.search(r"^Scanning files: 1,000 ", text, re.M)
    bars = [BAR.search(line) for line in text.splitlines() if "Embedding " in line and "Embedding:" not in line]
    assert all(bars) and len(bars) >= 3, "every capture shows the embedding bar in full"
    embedded = _number(re.search(r"Chunks: ([\d,]+) embedded", text).group(1))
    assert {bar.group(2) for bar in bars} == {f"{embedded:,}"}, "the total, from the first capture on"
    running = [bar for bar in bars if 0 < _number(bar.group(1)) < embedded]
    assert len(running) >= 3 and all(bar.group(4) != "-:--:--" for bar in running), "an ETA while embedding"
    assert [_number(bar.group(1)) for bar in bars] == sorted(_number(bar.group(1)) for bar in bars)
    assert re.search(r"^Embedding: [\d,]+ in [\d.]+ s", text, re.M)  # the one-line summary
    assert re.search(r"Ingested 1,?000 file\(s\)", text)
