"""Response cache in SQLite: exact (hash of the canonical request) and opt-in semantic.

Entries remember the chunks their prompt was built from; ``ingest`` invalidates the
entries whose chunks it changed or deleted.

A semantic hit means "the same question about the same sources", and errs toward a miss:

* **Same sources.** An entry is only a candidate when the new question's prompt would be
  built from exactly the same set of chunks (``retrieval_scope``): another ``--where``
  filter, another ``k``, another context budget or a re-ingested document all change that
  set, so the answer of one retrieval is never served for another.
* **Same words in the same order.** Both questions are reduced to a token *sequence* by
  safe normalisation only (``question_tokens``): case (except where it is meaning: mixed
  case such as MBps/Mbps, capitals of one or two letters such as MB or "option A"), punctuation, contractions, digit
  grouping and number words, hyphenated and spaced spellings of a few compounds
  ("back-up"/"back up"/"backup"), articles, a closed list of greetings and politeness
  words, and a few question frames that ask the same thing ("how do I" / "how can I" /
  "how to"; "can I" / "is it possible to"; "where do I" / "where can I"); "what" and
  "which", "who" and "whom", and "turn on" / "switch on" → "enable" (and off → disable).
  Everything else is content and must be equal *in position*: no synonym table and no
  stemming (resolve/fix, remove/erase, operator/operation stay different), pronouns are
  words (can you / can I), numbers are compared where they stand (7 daily and 4 weekly /
  4 daily and 7 weekly), and word order carries roles and direction (to/from, a Linux
  backup on Windows / a Windows backup on Linux, compression before encryption).
* **Close embeddings** (cosine ≥ ``cache.semantic_threshold``) as well.

Anything else is a miss. A hit reports the earlier question it reused (``CacheHit.question``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
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

# -- safe normalisation of a question into a token sequence --------------------------------
# Tokens: words, numbers (with decimals: 3.1 is not 31, .5 is not 5) and the symbols that carry
# meaning, operators included (!= is not =, 30 * 2 is not 30 - 2, ≥ is not ≤). A hyphen between two
# letters is not a token (back-up is backup); any other (-1, 1e-5, 30 - 2, --flag) is, and is kept.
_TOKEN = re.compile(r"\.?\d+(?:\.\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?|[!=<>]=|-(?![^\W\d_])|(?<![^\W\d_])-"
                    r"|[^\w\s.,;:?!'\"`‘’“”…\-]")  # every other symbol is a token: ≥, ×, −, (, $ ...
# Superscript and subscript digits are exponents and indices, not digits: 10² is not 102 (NFKC would fold them).
_SCRIPTS = str.maketrans({**{c: f"^{i}" for i, c in enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹")},
                          **{c: f"_{i}" for i, c in enumerate("₀₁₂₃₄₅₆₇₈₉")}})
# Capitalised words that are other words in lower case (the US / us, IT / it, WHO / who).
_KEEP_CASE = frozenset({"US", "IT", "WHO", "OR", "AS", "IS"})
_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not",
                 "ain't": "is not", "let's": "let us"}
_SUFFIXES = [("n't", " not"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"), ("'m", " am"),
             ("'d", " would")]
_IS_AFTER = frozenset("what who where when why how it that there here".split())  # what's -> what is
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90"})
# Spellings of one word (back-up / back up / backup), not synonyms.
_COMPOUNDS = {("back", "up"): "backup", ("set", "up"): "setup", ("log", "in"): "login",
              ("log", "on"): "logon", ("log", "out"): "logout", ("sign", "in"): "signin",
              ("sign", "up"): "signup", ("sign", "out"): "signout", ("e", "mail"): "email"}
# Phrasal verbs with a one-word equivalent in software settings.
_PHRASAL = {("turn", "on"): "enable", ("switch", "on"): "enable", ("turn", "off"): "disable",
            ("switch", "off"): "disable"}
_VERB_FORMS = {"turn": ("turn", "turns", "turned", "turning"), "switch": ("switch", "switches", "switched",
                                                                         "switching")}
_FILLER = frozenset("please kindly hi hello hey thanks thx exactly a an the".split())
# One word, two spellings (max is maximum; "min" is not here: it may be minutes).
_SAME_WORD = {"which": "what", "whom": "who", "max": "maximum", "info": "information",
              "repo": "repository", "repos": "repositories", "&": "and", "percent": "%", "vs": "versus"}
# Openings that ask the same thing, longest first; matched at the start only.
_FRAMES = [(tuple(f.split()), canon) for f, canon in sorted([
    ("how do i", "how-i"), ("how can i", "how-i"), ("how could i", "how-i"), ("how would i", "how-i"),
    ("how to", "how-i"), ("how do i go about", "how-i"),
    ("where do i", "where-i"), ("where can i", "where-i"),
    ("can i", "can-i"), ("could i", "can-i"), ("is it possible to", "can-i"),
    ("is it possible for me to", "can-i"), ("am i able to", "can-i"),
    ("tell me", ""), ("please tell me", ""), ("can you tell me", ""), ("could you tell me", ""),
], key=lambda fc: -len(fc[0].split()))]


def _case_matters(tok: str) -> bool:
    """Case is meaning in mixed-case tokens (MBps / Mbps, macOS) and in short capitals (MB / mb,
    "option A"), and in a few capitalised words (the US / us). Elsewhere it is folded."""
    if tok == "I" or tok.islower():
        return False
    return tok in _KEEP_CASE or len(tok) <= 2 or not (tok.isupper() or tok.istitle())


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text.translate(_SCRIPTS)).replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)            # 1,000 -> 1000
    text = re.sub(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)", " ", text)  # 5GB -> 5 GB, E1042 -> E 1042
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        tok, before = m.group(), text[:m.start()].rstrip()
        stem = tok.split("'")[0]  # What's: the case of "What"
        if _case_matters(stem) and (not stem.istitle() or (before and before[-1] not in ".?!:;,")):
            out.append(tok)  # a sentence's first word is folded only when it is merely capitalised (MBps stays)
            continue
        tok = "i" if tok == "I" else tok.lower()
        if tok in _CONTRACTIONS:
            out += _CONTRACTIONS[tok].split()
            continue
        for suffix, full in _SUFFIXES:
            if tok.endswith(suffix) and len(tok) > len(suffix):
                stem = tok[:-len(suffix)]
                out += [{"ca": "can", "wo": "will", "sha": "shall"}.get(stem, stem)] + full.split()
                break
        else:
            if tok.endswith("'s"):
                stem = tok[:-2]
                out += [stem, "is"] if stem in _IS_AFTER else [stem, "'s"]  # possessive stays
            else:
                out.append(tok)
    return out


def _join_pairs(words: list[str], table: dict, forms: dict | None = None) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        if i + 1 < len(words):
            first = words[i]
            if forms:
                first = next((base for base, fs in forms.items() if first in fs), first)
            joined = table.get((first, words[i + 1]))
            if joined:
                out.append(joined)
                i += 2
                continue
        out.append(words[i])
        i += 1
    return out


def question_tokens(question: str) -> tuple[str, ...]:
    """The question as a token sequence after safe normalisation only (see the module doc)."""
    words = [_NUMBER_WORDS.get(w, w) for w in _words(question)]
    words = _join_pairs(words, _COMPOUNDS)
    words = _join_pairs(words, _PHRASAL, _VERB_FORMS)
    words = [w for i, w in enumerate(words) if w not in _FILLER and w != "thank"
             and not (w == "you" and i and words[i - 1] == "thank")]
    for _ in range(2):  # "please tell me how to ..." -> "how-i ..."
        for frame, canon in _FRAMES:
            if tuple(words[:len(frame)]) == frame:
                words = ([canon] if canon else []) + words[len(frame):]
                break
    return tuple(_SAME_WORD.get(w, w) for w in words)


def same_question(candidates, vector: np.ndarray, question: str, threshold: float) -> tuple[tuple | None, dict]:
    """The semantic cache's choice, for every store: among ``(entry, embedding bytes, the question it
    answered or None)``, the most similar entry at ``threshold`` or above whose question ``guard``
    accepts. ``((entry, similarity), {})``, or ``(None, {"rejected": ...})`` naming the closest
    refusal. Without a stored question (llm.store_prompts: false) the guard cannot run: no hit."""
    best, best_sim, rejected = None, -1.0, None
    for entry, blob, asked in candidates:
        if not blob:
            continue  # stored without an embedding
        stored = np.frombuffer(blob, dtype=np.float32)
        if stored.shape != vector.shape:  # another embedding model wrote it
            continue
        sim = float(np.dot(stored, vector))
        if sim < threshold or sim <= best_sim:
            continue
        reason = guard(question, asked) if asked is not None else "question not stored"
        if reason:
            rejected = {"similarity": round(sim, 4), "reason": reason}
            continue
        best, best_sim = entry, sim
    if best is None:
        return None, {"rejected": rejected} if rejected else {}
    return (best, best_sim), {}


def guard(q1: str, q2: str) -> str | None:
    """Why two questions must not share an answer, or None if they are the same question."""
    a, b = question_tokens(q1), question_tokens(q2)
    if a == b:
        return None
    i = next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"different questions from word {i + 1}: {' '.join(a[i:i + 4]) or '-'} / {' '.join(b[i:i + 4]) or '-'}"


def retrieval_scope(scope: str, chunk_ids: list[str] | None) -> str:
    """The semantic key: the model scope and the *set* of chunks the prompt is built from."""
    ids = "\n".join(sorted(set(chunk_ids or [])))
    return hashlib.sha256(f"{scope}\0{ids}".encode()).hexdigest()


def request_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    canonical = json.dumps({"base_url": base_url.rstrip("/"), "model": model, "messages": messages,
                            "params": params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_time_sensitive(question: str) -> bool:
    return bool(TIME_SENSITIVE.search(question))


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
    question: str | None = None  # a semantic hit: the earlier question whose answer this is


class ResponseCache:
    def __init__(self, path: Path, shared: bool = False):
        self.path = path
        self.db = connect(path, SCHEMA, "response cache", shared=shared)

    def close(self) -> None:
        self.db.close()

    def _bump(self, **deltas: float) -> None:
        for name, delta in deltas.items():
            self.db.execute("INSERT INTO stats VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                            "value = value + excluded.value", (name, delta))

    def stats(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT name, value FROM stats").fetchall())

    def _hit(self, row, kind: str, now: float, similarity: float | None = None,
             question: str | None = None) -> CacheHit:
        key, provider, model, answer, usage, cost, sources = row
        usage_d = json.loads(usage)
        tokens = (usage_d.get("prompt_tokens") or 0) + (usage_d.get("completion_tokens") or 0)
        self.db.execute("UPDATE entries SET hits = hits + 1, saved_usd = saved_usd + ?, "
                        "saved_tokens = saved_tokens + ? WHERE key = ?", (cost or 0, tokens, key))
        self._bump(**{f"hits_{kind}": 1, "saved_usd": cost or 0, "saved_tokens": tokens,
                      "hits_unpriced": 1 if cost is None else 0})
        return CacheHit(key, kind, answer, provider, model, usage_d, cost, json.loads(sources), similarity,
                        question)

    def get_exact(self, key: str, now: float, count: bool = True) -> CacheHit | None:
        """The answer stored under ``key``; ``count``: this is a new lookup for the hit rate (a
        call's other providers' keys are the same lookup)."""
        if count:
            self._bump(lookups_exact=1)
        row = self.db.execute(
            "SELECT key, provider, model, answer, usage, cost_usd, sources FROM entries "
            "WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return self._hit(row, "exact", now) if row else None

    def get_semantic(self, vector: np.ndarray, question: str, scope: str, threshold: float, now: float,
                     chunk_ids: list[str] | None = None, count: bool = True) -> tuple[CacheHit | None, dict]:
        """The closest entry that asks the same question (``guard``) about the same set of chunks
        (``chunk_ids``: those the new prompt is built from) with a cosine similarity of at least
        ``threshold``; the dict says what was refused."""
        if count:
            self._bump(lookups_semantic=1)
        rows = self.db.execute(
            "SELECT key, provider, model, answer, usage, cost_usd, sources, question, embedding "
            "FROM entries WHERE scope = ? AND expires > ? AND embedding IS NOT NULL",
            (retrieval_scope(scope, chunk_ids), now)).fetchall()
        match, refused = same_question(((row, row[8], row[7]) for row in rows), vector, question, threshold)
        if match is None:
            return None, refused
        row, sim = match
        return self._hit(row[:7], "semantic", now, sim, row[7]), {}

    def put(self, key: str, scope: str, now: float, ttl_s: float, hit: CacheHit, chunk_ids: list[str],
            question: str | None, vector: np.ndarray | None) -> None:
        blob = vector.astype(np.float32).tobytes() if vector is not None else None
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM entry_chunks WHERE key = ?", (key,))
            self.db.execute(
                "INSERT OR REPLACE INTO entries (key, scope, created, expires, provider, model, answer, "
                "usage, cost_usd, sources, question, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, retrieval_scope(scope, chunk_ids), now, now + ttl_s, hit.provider, hit.model, hit.answer,
                 json.dumps(hit.usage), hit.cost_usd, json.dumps(hit.sources), question, blob))
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
