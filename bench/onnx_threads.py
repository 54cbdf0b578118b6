"""The ONNX encoder's CPU threads: one process, and two processes embedding at once.

Each run embeds the same 256 texts (~120 words, cut to the model's 256-token window) in batches
of 32 with the model's ONNX copy (``embedding/onnx.py``), with ``threads`` compute threads
(0: onnxruntime's choice, one per core) and its thread pool spinning between operations (``spin``,
onnxruntime's default) or not (``nospin``, llmctl's setting). "pair" starts two such processes at
once and reports the slower one: what two xdist workers, or two CI jobs, see. Measured, never
asserted; bench/out/onnx_threads.json.

    python bench/onnx_threads.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "onnx_threads.json"
SETTINGS = [(0, "spin"), (0, "nospin"), (1, "nospin"), (2, "nospin")]


def child(threads: int, spin: str) -> None:
    import onnxruntime as ort

    from llmctl.embedding import onnx
    from llmctl.embedding.local import resolve_model

    model_id, folder = resolve_model("all-MiniLM-L6-v2", True)
    export = onnx.ensure_export(model_id, folder)
    enc = onnx.OnnxEncoder(export, folder, 256, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin == "spin" else "0")
    enc.session = ort.InferenceSession(str(export.folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = random.Random(1)
    words = "backup snapshot restore prune chunk key repository daemon schedule policy".split()
    texts = [" ".join(f"{rng.choice(words)}{rng.randint(0, 99)}" for _ in range(120)) for _ in range(256)]
    enc.encode(texts[:2], True)
    started = time.perf_counter()
    for i in range(0, len(texts), 32):
        enc.encode(texts[i:i + 32], True)
    print(time.perf_counter() - started)


def run(threads: int, spin: str, processes: int) -> float:
    cmd = [sys.executable, __file__, "--child", str(threads), spin]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return max(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    rows = []
    for threads, spin in SETTINGS:
        for processes in (1, 2):
            secs = min(run(threads, spin, processes) for _ in range(args.repeats))
            rows.append({"threads": threads, "spin": spin, "processes": processes, "seconds": round(secs, 2)})
            print(f"threads {threads} {spin:6} {'one' if processes == 1 else 'pair'}: {secs:.2f} s", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
