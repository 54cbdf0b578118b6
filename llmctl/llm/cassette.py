"""A cassette of model calls: ``eval --record FILE`` writes one, ``eval --replay FILE`` answers from it.

A fork or a pull request without API keys runs the answer checks deterministically from a
cassette committed by someone who has them. Entries are addressed by the content of the
request (messages, temperature, max_tokens), not by provider or key, so a fallback or another
endpoint serving the same prompts replays the same answers; any change to what would be sent
(a retrieved chunk, the system prompt, the question) is a miss. A miss is an error for that
case, never a silent pass.

The file is JSON Lines, one entry per request, appended as answers arrive (a crash keeps what
was recorded). Recording onto an existing tape resumes it: a request already on the tape is
answered from it (no call, nothing paid), the others are called and appended, and a run that
finishes leaves exactly its own requests on the tape. With ``llm.store_prompts: false`` the
messages are left out; the key still addresses them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from llmctl.errors import InputError, ProviderError
from llmctl.llm.cache import request_key
from llmctl.llm.client import Completion


def request_hash(messages: list[dict], temperature: float, max_tokens: int, repeat: int = 0) -> str:
    """The response cache's key with no endpoint and no model: what is sent, wherever it goes; the
    2nd, 3rd... asking of the same request (``eval --repeats``) is an entry of its own."""
    params = {"temperature": temperature, "max_tokens": max_tokens, **({"repeat": repeat} if repeat else {})}
    return request_key("", "", messages, params)


class Cassette:
    def __init__(self, path: Path, mode: str, store_prompts: bool = True):
        if mode not in ("record", "replay"):
            raise ValueError(mode)
        self.path = Path(path)
        self.mode = mode
        self.store_prompts = store_prompts
        self.entries: dict[str, dict] = {}
        self.used: set[str] = set()  # the keys this run asked for
        self._lock = threading.Lock()
        if mode == "replay" or self.path.exists():  # --record onto a tape: resume it
            self.entries = self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def _read(self) -> dict[str, dict]:
        flag = f"--{self.mode}"
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise InputError(f"--replay {self.path}: no such file (record one with --record)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{flag} {self.path}: cannot be read ({exc}); give another file") from None
        out = {}
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                out[entry["key"]] = entry
                entry["response"]["text"]  # noqa: B018
            except (ValueError, KeyError, TypeError):
                if self.mode == "record" and n == len(lines):  # a recording killed mid-line: resume before it
                    self.path.write_text("".join(line + "\n" for line in lines[:n - 1]), encoding="utf-8")
                    break
                raise InputError(f"{flag} {self.path}:{n}: not a cassette entry (a JSON object with "
                                 "'key' and 'response'); record into a new file with --record") from None
        return out

    def has(self, messages: list[dict], temperature: float, max_tokens: int, repeat: int = 0) -> bool:
        return request_hash(messages, temperature, max_tokens, repeat) in self.entries

    def finish(self) -> None:
        """A finished recording keeps exactly this run's requests (a resumed tape drops the ones
        no longer asked); a replay changes nothing."""
        if self.mode != "record":
            return
        with self._lock:
            kept = [e for k, e in self.entries.items() if k in self.used]
            if len(kept) == len(self.entries):
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in kept), encoding="utf-8")
            tmp.replace(self.path)

    def replay(self, messages: list[dict], temperature: float, max_tokens: int, question: str,
               repeat: int = 0) -> Completion:
        key = request_hash(messages, temperature, max_tokens, repeat)
        entry = self.entries.get(key)
        self.used.add(key)
        if entry is None:
            raise ProviderError(f"not in the cassette {self.path.name}: the request for {question[:80]!r} "
                                "changed since it was recorded (or was never recorded); record it again "
                                "with --record")
        r = entry["response"]
        return Completion(r["text"], r.get("provider", ""), r.get("model", ""), r.get("prompt_tokens"),
                          r.get("completion_tokens"), r.get("usage_reported", False), r.get("finish_reason"),
                          cost_usd=0.0, cache="replay")

    def record(self, messages: list[dict], temperature: float, max_tokens: int, comp: Completion,
               repeat: int = 0) -> None:
        key = request_hash(messages, temperature, max_tokens, repeat)
        entry = {"key": key, **({"repeat": repeat} if repeat else {}),
                 "request": ({"messages": messages, "temperature": temperature, "max_tokens": max_tokens}
                             if self.store_prompts else None),
                 "response": {"text": comp.text, "provider": comp.provider, "model": comp.model,
                              "prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens,
                              "usage_reported": comp.usage_reported, "finish_reason": comp.finish_reason}}
        with self._lock:
            self.used.add(key)
            if key in self.entries:
                return
            self.entries[key] = entry
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Repeat:
    """The cassette as one repeat of an ``eval --repeats`` run sees it (what a Gateway is given)."""

    def __init__(self, cassette: Cassette, repeat: int):
        self.cassette, self.repeat, self.mode = cassette, repeat, cassette.mode

    def has(self, messages: list[dict], temperature: float, max_tokens: int) -> bool:
        return self.cassette.has(messages, temperature, max_tokens, self.repeat)

    def replay(self, messages: list[dict], temperature: float, max_tokens: int, question: str) -> Completion:
        return self.cassette.replay(messages, temperature, max_tokens, question, self.repeat)

    def record(self, messages: list[dict], temperature: float, max_tokens: int, comp: Completion) -> None:
        self.cassette.record(messages, temperature, max_tokens, comp, self.repeat)
