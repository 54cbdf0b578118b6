"""How the ONNX encoder groups texts: CPU seconds for the same vectors.

"before": the texts sorted by characters, cut into batches of ``embedding.batch_size`` (64),
each padded to its longest text (what ingest did until 2026-12-07). "after":
``OnnxEncoder.encode``, which sorts by tokens and runs groups of at most ``device.PADDED_TOKENS``
padded tokens. One thread, so CPU time is the cost; best of ``--repeats``. Texts: the chunks of an
ingest of sample_data/ and of /usr/share/doc/python3-pip (when installed), and 600 SciFact
abstracts (../shared; the model reads their first 256 tokens). Measured, never asserted;
bench/out/onnx_batching.json.

    python bench/onnx_batching.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "onnx_batching.json"


def chunk_texts(folder: Path) -> list[str]:
    from llmctl import Workspace
    from llmctl.index.manifest import Manifest

    with tempfile.TemporaryDirectory() as tmp:
        Workspace(data_dir=tmp).ingest([folder])
        m = Manifest(Path(tmp) / "manifest.sqlite", readonly=True)
        try:
            return [text for _, text in m.keyword_corpus()]
        finally:
            m.close()


def scifact_texts(n: int = 600) -> list[str]:
    path = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
    if not path.exists():
        return []
    with path.open() as fh:
        docs = [json.loads(line) for _, line in zip(range(n), fh, strict=False)]
    return [f"{d['title']}\n\n{d['text']}" for d in docs]


def before(enc, texts: list[str], batch: int) -> np.ndarray:
    """The old way: character-sorted batches, each padded to its longest text."""
    tok = enc.tokenizer
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), enc.dimension), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        tok.enable_padding(pad_id=enc.pad_id)
        try:
            rows = tok.encode_batch([texts[i] for i in idx])
        finally:
            tok.no_padding()
        ids = np.array([r.ids for r in rows], dtype=np.int64)
        mask = np.array([r.attention_mask for r in rows], dtype=np.int64)
        vecs = enc._pool(ids, mask)
        out[idx] = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return out


def cpu(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = fn()
        best = min(best, time.process_time() - started)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from llmctl.config import Config
    from llmctl.embedding import device
    from llmctl.embedding.local import Embedder

    cfg = Config().embedding.model_copy(update={"threads": 1})
    enc = Embedder(cfg, export=True).onnx
    sets = {"sample_data chunks": chunk_texts(REPO / "sample_data")}
    pip_docs = Path("/usr/share/doc/python3-pip")
    if pip_docs.exists():
        sets["python3-pip doc chunks"] = chunk_texts(pip_docs)
    if abstracts := scifact_texts():
        sets["SciFact abstracts (600)"] = abstracts
    rows = []
    for name, texts in sets.items():
        enc.encode(texts[:4], True)  # warm the session
        old_s, old = cpu(lambda t=texts: before(enc, t, cfg.batch_size), args.repeats)
        new_s, new = cpu(lambda t=texts: enc.encode(t, True), args.repeats)
        tokens = sum(len(e.ids) for e in enc.tokenizer.encode_batch(texts))
        rows.append({"texts": name, "n": len(texts), "tokens": tokens, "before_cpu_s": round(old_s, 2),
                     "after_cpu_s": round(new_s, 2), "saved": round(1 - new_s / old_s, 3),
                     "max_abs_diff": float(np.abs(old - new).max())})
        print(json.dumps(rows[-1]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"padded_tokens": device.PADDED_TOKENS, "batch_size": cfg.batch_size, "rows": rows},
                              indent=1) + "\n")


if __name__ == "__main__":
    main()
