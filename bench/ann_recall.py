"""How much of the exact dense top 50 Chroma's HNSW search returns, by ef_search. Measured, never asserted.

On a copy of the SciFact index (bench/ingest_bench.py), for each ef_search value in a fresh
process (Chroma caches an opened index per process): the share of the exact top-50 chunk ids
(numpy over the stored vectors) that `collection.query` returns, how many of the lists are
identical to the exact ones, and the query latency.

    python bench/ann_recall.py            # writes bench/out/ann.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import common
import numpy as np

EF = (100, 200, 400, 800)
QUERIES = 300


def one(path: str, ef: int) -> dict:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    col = client.get_collection("llmctl_chunks")
    qtext, _ = common.queries_and_qrels()
    qids = list(qtext)
    queries = common.query_vectors(qids, qtext)[:QUERIES]
    arr = common.index_arrays()
    ids = np.array(arr["ids"])
    found, same, lat = 0, 0, []
    for q in queries:
        exact = list(ids[np.argsort(-(arr["vectors"] @ q), kind="stable")[:50]])
        t = time.perf_counter()
        got = col.query(query_embeddings=[q.tolist()], n_results=50, include=["distances"])["ids"][0]
        lat.append(time.perf_counter() - t)
        found += len(set(got) & set(exact))
        same += got == exact
    lat.sort()
    return {"ef_search": ef, "recall_at_50": round(found / len(queries) / 50, 5),
            "identical_lists": f"{same}/{len(queries)}", "chunks": len(ids),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2), "p95_ms": round(lat[int(len(lat) * 0.95)] * 1000, 2)}


def main() -> None:
    if len(sys.argv) == 3:  # internal: one measurement in this fresh process
        print(json.dumps(one(sys.argv[1], int(sys.argv[2]))))
        return
    import chromadb
    from chromadb.config import Settings

    copy = common.OUT / "ann-chroma"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(common.INDEX / "chroma", copy)
    rows = []
    for ef in EF:
        client = chromadb.PersistentClient(path=str(copy), settings=Settings(anonymized_telemetry=False))
        client.get_collection("llmctl_chunks").modify(configuration={"hnsw": {"ef_search": ef}})
        del client
        out = subprocess.run([sys.executable, __file__, str(copy), str(ef)], capture_output=True, text=True,
                             check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    shutil.rmtree(copy, ignore_errors=True)
    (common.OUT / "ann.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
