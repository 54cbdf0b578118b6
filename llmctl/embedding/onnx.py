"""A torch-free copy of the embedding model: an ONNX graph run by onnxruntime.

Importing torch and sentence-transformers costs 6-9 s; onnxruntime and tokenizers cost
~0.15 s. The first ingest with a model exports it once, in a child process (an in-process
export has been seen to perturb the live model), into the user cache
(``$LLMCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmctl``, else ``~/.cache/llmctl``). The
export is kept only if its vectors match sentence-transformers' on a probe set (cosine
>= 0.9999); its sha256 goes into ``meta.json`` and into the index settings. Models that
are not a plain Transformer + mean/CLS pooling (+ Normalize) stay on sentence-transformers.

Run as ``python -m llmctl.embedding.onnx MODEL_FOLDER OUT_FOLDER`` (what ingest does).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llmctl.embedding.device import padded_groups

MIN_COSINE = 0.9999
FORMAT = "onnx/1"
EXPORT_TIMEOUT_S = 900
PROBES = [
    "How many daily snapshots does the default retention policy keep?",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 60,  # longer than the window: truncated
    "def handler(event, context):\n    return {'statusCode': 200}\n",
    "Résumé naïve café — 東京 の 天気 は 晴れ です",
    "Kubernetes pods restart with CrashLoopBackOff when the liveness probe fails.",
]


class Unsupported(Exception):
    """This model cannot be exported (the reason is the message)."""


def cache_root() -> Path:
    if os.environ.get("LLMCTL_CACHE_DIR"):
        return Path(os.environ["LLMCTL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "llmctl"


def model_key(model_id: str, folder: Path) -> str:
    """Names and sizes of the model's files: a new model version gets a new export."""
    h = hashlib.sha256(f"{FORMAT}\0{model_id}".encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"\0{p.relative_to(folder)}\0{p.stat().st_size}".encode())
    return h.hexdigest()[:20]


def export_dir(model_id: str, folder: Path) -> Path:
    """Where this model's export lives in the cache."""
    return cache_root() / "onnx" / model_key(model_id, folder)


def pooling_of(folder: Path) -> tuple[str, bool]:
    """(mean | cls, has Normalize) from a sentence-transformers folder, or Unsupported."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return "mean", False  # a plain transformers folder: sentence-transformers mean-pools it
    modules = json.loads(modules_file.read_text())
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise Unsupported(f"modules {kinds} (only Transformer + Pooling [+ Normalize] are exported)")
    if modules[0].get("path"):
        raise Unsupported("the transformer is not at the model folder's root")
    pool = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode") and v]
    known = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    mode = known.get(modes[0]) if len(modes) == 1 else None
    if mode is None:
        raise Unsupported(f"pooling {modes} (only mean or CLS pooling is exported)")
    return mode, "Normalize" in kinds


@dataclass
class Export:
    """A verified export in ``folder``: model.onnx plus meta.json."""

    folder: Path
    meta: dict

    @classmethod
    def find(cls, folder: Path) -> Export | None:
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") == FORMAT and (folder / "model.onnx").stat().st_size == meta["size"]:
                return cls(folder, meta)
        except (OSError, ValueError, KeyError):
            pass
        return None

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]


def ensure_export(model_id: str, folder: Path, timeout: float = EXPORT_TIMEOUT_S) -> Export:
    """The verified export of this model, made now (in a child process) if missing.
    Raises Unsupported with the reason when it cannot be made."""
    from filelock import FileLock

    pooling_of(folder)  # fail fast, without starting a process, for unsupported models
    out = export_dir(model_id, folder)
    if found := Export.find(out):
        return found
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out) + ".lock")
        lock.acquire(timeout=timeout)
    except OSError as exc:
        raise Unsupported(f"the cache folder {out.parent} is not writable ({exc.strerror})") from None
    try:
        if found := Export.find(out):  # another process made it while we waited
            return found
        try:
            proc = subprocess.run([sys.executable, "-m", "llmctl.embedding.onnx", str(folder), str(out)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Unsupported(f"the export took longer than {timeout:.0f} s") from None
        found = Export.find(out)
        if proc.returncode != 0 or found is None:
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            raise Unsupported(lines[-1][:300] if lines else f"the export exited with {proc.returncode}")
        return found
    finally:
        lock.release()


class OnnxEncoder:
    """Sentence vectors from an export: tokenize, run the graph, pool, normalize."""

    def __init__(self, export: Export, model_folder: Path, max_seq_length: int, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.export = export
        self.pooling = export.meta["pooling"]
        self.normalize_always = export.meta["normalize"]
        self.dimension = int(export.meta["dimension"])
        tok = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
        tok.enable_truncation(max_length=max_seq_length)
        tok.no_padding()  # encode() pads each group itself, to its own longest text
        self.tokenizer = tok
        self.pad_id = int(export.meta.get("pad_id", 0))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # Threads wait without spinning between operations: spinning burns the cores another
        # process (a second ingest, a CI job, a test worker) needs; bench/onnx_threads.py.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(export.folder / "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: list[str], normalize: bool):
        """One vector per text, in input order. Texts run longest first, in groups padded to at
        most PADDED_TOKENS (``padded_groups``): on a CPU a padding token costs what a real one
        does and a bigger batch saves nothing, so a 254-token chunk batched with 40-token ones
        tripled their cost (bench/onnx_batching.py: the same vectors for 15-55% less CPU)."""
        import numpy as np

        enc = self.tokenizer.encode_batch(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for group in padded_groups([len(e.ids) for e in enc]):
            width = len(enc[group[0]].ids)
            ids = np.full((len(group), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                n = len(enc[i].ids)
                ids[row, :n], mask[row, :n] = enc[i].ids, 1
            out[group] = self._pool(ids, mask)
        if normalize or self.normalize_always:
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def _pool(self, ids, mask):
        import numpy as np

        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        tokens = self.session.run(None, feed)[0]
        if self.pooling == "cls":
            return tokens[:, 0]
        m = mask[..., None].astype(np.float32)
        return (tokens * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


# -- the export itself: runs in a child process, imports torch --------------------------
def _export(folder: Path, out: Path) -> None:
    import inspect
    import shutil
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    pooling, has_norm = pooling_of(folder)
    if not (folder / "tokenizer.json").exists():
        raise Unsupported("the model has no tokenizer.json (a fast tokenizer is needed)")
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True).eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class Graph(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.m(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    sample = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "token_embeddings"]}
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        with torch.no_grad():
            torch.onnx.export(Graph(model), sample, str(tmp / "raw.onnx"), input_names=names,
                              output_names=["token_embeddings"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        graph = tmp / "raw.onnx"
        cfg = model.config
        if cfg.model_type == "bert":  # fuse attention/LayerNorm/GELU: ~1.2x faster here
            try:
                from onnxruntime.transformers import optimizer

                opt = optimizer.optimize_model(str(graph), model_type="bert", num_heads=cfg.num_attention_heads,
                                               hidden_size=cfg.hidden_size, opt_level=1)
                opt.save_model_to_file(str(tmp / "model.onnx"))
                graph.unlink()
                graph = tmp / "model.onnx"
            except Exception as exc:  # noqa: BLE001 - the unfused graph is still correct
                print(f"note: graph not optimised ({exc})", file=sys.stderr)
        graph.rename(tmp / "model.onnx")
        pad_id = st.tokenizer.pad_token_id or 0
        meta = {"format": FORMAT, "pooling": pooling, "normalize": has_norm, "pad_id": int(pad_id),
                "dimension": int(st.get_sentence_embedding_dimension()), "size": (tmp / "model.onnx").stat().st_size,
                "sha256": _sha256(tmp / "model.onnx"), "torch": torch.__version__}
        enc = OnnxEncoder(Export(tmp, meta), folder, st.max_seq_length, threads=1)
        want = st.encode(PROBES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
        got = enc.encode(PROBES, normalize=True)
        cosine = float(np.min(np.sum(want * got, axis=1)))
        if not cosine >= MIN_COSINE:
            raise Unsupported(f"the ONNX graph disagrees with sentence-transformers (cosine {cosine:.6f})")
        meta["parity_min_cosine"] = round(cosine, 7)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":
    try:
        _export(Path(sys.argv[1]), Path(sys.argv[2]))
    except Unsupported as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
