"""Response cache in SQLite: exact (hash of the canonical request) and opt-in semantic.

Entries remember the chunks their prompt was built from; ``ingest`` invalidates the
entries whose chunks it changed or deleted. Semantic hits need cosine similarity above
a threshold *and* pass a structural guard: after dropping function words and stemming,
the two questions must use the same content words, where a word may differ only for a
known paraphrase (delete/remove, price/cost, "turn on"/enable ...). So "daily" vs
"weekly", keep vs delete, before vs after, 10 GB vs 10 MB, S3 vs Azure are all refused,
however close their embeddings are. Negations and numbers are checked as well.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmctl.llm.store import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    provider TEXT, model TEXT,
    answer TEXT NOT NULL,
    usage TEXT NOT NULL,
    cost_usd REAL,
    sources TEXT NOT NULL,
    question TEXT,
    embedding BLOB,
    hits INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0,
    saved_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entry_chunks (key TEXT NOT NULL, chunk_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entry_chunks_chunk ON entry_chunks(chunk_id);
CREATE INDEX IF NOT EXISTS entry_chunks_key ON entry_chunks(key);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""

TIME_SENSITIVE = re.compile(
    r"\b(today|tonight|now|current(ly)?|latest|newest|recent(ly)?|this (week|month|year)|"
    r"yesterday|tomorrow)\b", re.I)
NEGATIONS = {"not", "no", "never", "without", "cannot", "nor", "none", "neither"}
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")

# Words that do not change what is asked. Question words, modals other than can/could,
# prepositions of time and place and quantifiers other than "all" are content: they do.
FUNCTION_WORDS = frozenset("""
a an the is are was were be been being am do does did done i me my we us our you your it its
this that these those there of to in on at for by with from into onto as and or can could
possible able please just exactly usually typically actually really all s
""".split())
# Phrases first (before single words), then groups of interchangeable stems.
PHRASES = [(re.compile(p), r) for p, r in [
    (r"\bturn(?:ed|ing|s)? on\b", "enable"), (r"\bswitch(?:ed|ing|es)? on\b", "enable"),
    (r"\bturn(?:ed|ing|s)? off\b", "disable"), (r"\bswitch(?:ed|ing|es)? off\b", "disable"),
    (r"\bset(?:ting|s)? up\b", "configure"), (r"\bback(?:ed|ing|s)? up\b", "backup"),
    (r"\bwhat's\b", "what is"), (r"\bhow's\b", "how is"), (r"\bit's\b", "it is"),
]]
SYNONYMS = [
    {"cost", "price", "pricing"}, {"delet", "remov", "eras"}, {"chang", "modifi", "alter"},
    {"fix", "resolv", "solv"}, {"configur", "setup"}, {"list", "show", "display"},
    {"creat", "make"}, {"start", "begin", "launch"}, {"stop", "halt"}, {"find", "locat"},
    {"keep", "kept", "retain"}, {"which", "what"}, {"who", "whom"}, {"big", "larg"},
    {"often", "frequent"}, {"requir", "need"},
]
_CANONICAL = {stem: sorted(group)[0] for group in SYNONYMS for stem in group}


def request_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    canonical = json.dumps({"base_url": base_url.rstrip("/"), "model": model, "messages": messages,
                            "params": params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_time_sensitive(question: str) -> bool:
    return bool(TIME_SENSITIVE.search(question))


def _negated(q: str) -> bool:
    words = re.findall(r"[a-z']+", q.lower())
    return any(w in NEGATIONS or w.endswith("n't") for w in words)


def _entities(q: str) -> set[str]:
    """Capitalised words not opening the sentence, and codes like KB-1042 or AES-256."""
    tokens = re.findall(r"[A-Za-z][\w-]*", q)
    out = {t for i, t in enumerate(tokens)
           if i > 0 and t != "I" and (t[0].isupper() or any(c.isdigit() for c in t))}
    return {t.lower() for t in out}


@functools.cache
def _stem_words():
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def content_words(q: str) -> set[str]:
    """Stemmed content words of a question, each paraphrase group mapped to one form."""
    text = q.lower().replace("\u2019", "'")
    for pattern, replacement in PHRASES:
        text = pattern.sub(replacement, text)
    words = [w for w in re.findall(r"[a-z0-9]+", text) if w not in FUNCTION_WORDS]
    stems = _stem_words()(words)
    return {_CANONICAL.get(s, s) for s in stems}


def guard(q1: str, q2: str) -> str | None:
    """Why two similar questions must not share an answer, or None if they may."""
    if _negated(q1) != _negated(q2):
        return "negation differs"
    if set(NUMBER.findall(q1)) != set(NUMBER.findall(q2)):
        return "different numbers"
    if _entities(q1) != _entities(q2):
        return "different named entities"
    a, b = content_words(q1), content_words(q2)
    if a != b:
        return f"different content words: {', '.join(sorted(a - b)) or '-'} / {', '.join(sorted(b - a)) or '-'}"
    return None


@dataclass
class CacheHit:
    key: str
    kind: str  # exact | semantic
    answer: str
    provider: str
    model: str
    usage: dict
    cost_usd: float | None
    sources: list[dict]
    similarity: float | None = None


class ResponseCache:
    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path, SCHEMA, "response cache")

    def close(self) -> None:
        self.db.close()

    def _bump(self, **deltas: float) -> None:
        for name, delta in deltas.items():
            self.db.execute("INSERT INTO stats VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                            "value = value + excluded.value", (name, delta))

    def stats(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT name, value FROM stats").fetchall())

    def _hit(self, row, kind: str, now: float, similarity: float | None = None) -> CacheHit:
        key, provider, model, answer, usage, cost, sources = row
        usage_d = json.loads(usage)
        tokens = (usage_d.get("prompt_tokens") or 0) + (usage_d.get("completion_tokens") or 0)
        self.db.execute("UPDATE entries SET hits = hits + 1, saved_usd = saved_usd + ?, "
                        "saved_tokens = saved_tokens + ? WHERE key = ?", (cost or 0, tokens, key))
        self._bump(**{f"hits_{kind}": 1, "saved_usd": cost or 0, "saved_tokens": tokens,
                      "hits_unpriced": 1 if cost is None else 0})
        return CacheHit(key, kind, answer, provider, model, usage_d, cost, json.loads(sources), similarity)

    def get_exact(self, key: str, now: float) -> CacheHit | None:
        self._bump(lookups_exact=1)
        row = self.db.execute(
            "SELECT key, provider, model, answer, usage, cost_usd, sources FROM entries "
            "WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return self._hit(row, "exact", now) if row else None

    def get_semantic(self, vector: np.ndarray, question: str, scope: str, threshold: float,
                     now: float) -> tuple[CacheHit | None, dict]:
        """Best entry above the threshold that passes the guard; the dict says what was seen."""
        self._bump(lookups_semantic=1)
        rows = self.db.execute(
            "SELECT key, provider, model, answer, usage, cost_usd, sources, question, embedding "
            "FROM entries WHERE scope = ? AND expires > ? AND embedding IS NOT NULL", (scope, now)
        ).fetchall()
        best, best_sim, rejected = None, -1.0, None
        for row in rows:
            sim = float(np.dot(np.frombuffer(row[8], dtype=np.float32), vector))
            if sim < threshold or sim <= best_sim:
                continue
            # Without the stored question (llm.store_prompts: false) the guard cannot run: no hit.
            reason = guard(question, row[7]) if row[7] is not None else "question not stored"
            if reason:
                rejected = {"similarity": round(sim, 4), "reason": reason}
                continue
            best, best_sim = row, sim
        if best is None:
            return None, {"rejected": rejected} if rejected else {}
        return self._hit(best[:7], "semantic", now, best_sim), {}

    def put(self, key: str, scope: str, now: float, ttl_s: float, hit: CacheHit, chunk_ids: list[str],
            question: str | None, vector: np.ndarray | None) -> None:
        blob = vector.astype(np.float32).tobytes() if vector is not None else None
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM entry_chunks WHERE key = ?", (key,))
            self.db.execute(
                "INSERT OR REPLACE INTO entries (key, scope, created, expires, provider, model, answer, "
                "usage, cost_usd, sources, question, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, scope, now, now + ttl_s, hit.provider, hit.model, hit.answer, json.dumps(hit.usage),
                 hit.cost_usd, json.dumps(hit.sources), question, blob))
            self.db.executemany("INSERT INTO entry_chunks VALUES (?, ?)", [(key, c) for c in chunk_ids])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def invalidate_chunks(self, chunk_ids: list[str]) -> int:
        """Drop entries built from any of these chunks; returns how many."""
        keys: set[str] = set()
        for i in range(0, len(chunk_ids), 500):
            part = chunk_ids[i:i + 500]
            marks = ",".join("?" * len(part))
            keys.update(r[0] for r in self.db.execute(
                f"SELECT DISTINCT key FROM entry_chunks WHERE chunk_id IN ({marks})", part))
        self._drop(keys)
        if keys:
            self._bump(invalidations=len(keys))
        return len(keys)

    def prune_expired(self, now: float) -> int:
        keys = {r[0] for r in self.db.execute("SELECT key FROM entries WHERE expires <= ?", (now,))}
        self._drop(keys)
        return len(keys)

    def clear(self) -> int:
        keys = {r[0] for r in self.db.execute("SELECT key FROM entries")}
        self._drop(keys)
        return len(keys)

    def _drop(self, keys: set[str]) -> None:
        for key in keys:
            self.db.execute("DELETE FROM entries WHERE key = ?", (key,))
            self.db.execute("DELETE FROM entry_chunks WHERE key = ?", (key,))

    def summary(self, now: float) -> dict:
        n, live, oldest, newest, semantic = self.db.execute(
            "SELECT count(*), SUM(expires > ?), MIN(created), MAX(created), SUM(embedding IS NOT NULL) "
            "FROM entries", (now,)).fetchone()
        return {"entries": n, "live": live or 0, "expired": n - (live or 0),
                "semantic_entries": semantic or 0, "oldest": oldest, "newest": newest}
