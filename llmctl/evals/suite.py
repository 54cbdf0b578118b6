"""Golden-query suites: YAML (cases inline or in a JSONL file), validated with one-line errors."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmctl.config import load_yaml
from llmctl.errors import ConfigError
from llmctl.evals.metrics import FUNCTIONS, parse_metric

DEFAULT_METRICS = ["hit@3", "recall@5", "precision@5", "mrr@10", "ndcg@5"]
NO_ANSWER_PHRASE = "do not contain the answer"


def _canonical(metric: str) -> str:
    return metric.strip().lower()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Graded(_Model):
    source: str
    grade: int = Field(1, ge=1)


class AnswerCheck(_Model):
    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: list[str] = Field(default_factory=list)
    no_answer: bool = False  # the model must say the sources do not contain the answer

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        import re

        for rx in v:  # at load, before any answer is paid for
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"{rx!r} is not a valid regular expression ({exc})") from None
        return v


class Case(_Model):
    id: str
    query: str
    expected: list[str | Graded] = Field(default_factory=list)
    answer: AnswerCheck | None = None
    reference: str | None = None  # a reference answer for the LLM judge's correctness check
    tags: list[str] = Field(default_factory=list)
    # Cases of one group are resampled together by the gate's bootstrap (see gate.py); without it,
    # cases sharing an expected document are one group. `llmctl generate` writes the source document.
    group: str | None = None

    @field_validator("query")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def qrels_specs(self) -> list[tuple[str, int]]:
        return [(e, 1) if isinstance(e, str) else (e.source, e.grade) for e in self.expected]


class Suite(_Model):
    name: str
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    thresholds: dict[str, float] = Field(default_factory=dict)
    max_regression: float = Field(0.0, ge=0)
    # The family-wise error of the baseline/A-B gate: a metric regresses when it dropped beyond
    # max_regression and its one-sided clustered-bootstrap p-value, Holm-adjusted over the gated
    # metrics, is under this level. None (null): any drop beyond max_regression fails (no test).
    significance: float | None = Field(0.05, gt=0, lt=1)
    # true: a --baseline this run cannot be compared with (another corpus, other retrieval settings,
    # no shared case) fails the gate; false: a warning, and no regression check is made.
    require_comparable_baseline: bool = False
    repeats: int = Field(1, ge=1, le=100)  # each answer (and verdict) asked this many times
    # A run passes its answer checks when the mean pass rate over the answered cases (each case:
    # passes / repeats) is at least this. 1.0: every answer passes every time.
    min_pass_rate: float = Field(1.0, ge=0, le=1)
    seed: int = 0  # the bootstrap's resampling seed
    judge: bool = False  # also grade answers with the LLM: faithful to sources, agrees with reference
    cases_file: str | None = None
    cases: list[Case] = Field(default_factory=list)

    @field_validator("config")
    @classmethod
    def _no_data_dir(cls, v: dict[str, Any]) -> dict[str, Any]:
        # A suite runs on the index it is given (--data-dir / the Workspace's); a key that would
        # be ignored is refused rather than silently dropped.
        if "data_dir" in v:
            raise ValueError("a suite's config cannot set data_dir: the suite runs on the index it is "
                             "given (llmctl --data-dir DIR eval SUITE)")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        for name in v:
            check_metric(name)
        return list(dict.fromkeys(_canonical(name) for name in v))  # HIT@3 and 'hit@3 ' are hit@3

    @field_validator("thresholds")
    @classmethod
    def _known_threshold_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in v.items():
            check_metric(name)
            if not 0 <= value <= 1:
                raise ValueError(f"threshold for {name} must be between 0 and 1, got {value}")
            if _canonical(name) in out:
                raise ValueError(f"'{name}' is {_canonical(name)} again: give each metric one threshold")
            out[_canonical(name)] = value
        return out

    def all_metrics(self) -> list[str]:
        return list(dict.fromkeys([*self.metrics, *self.thresholds]))


def check_metric(name: str) -> None:
    try:
        parse_metric(name)
    except ValueError:
        raise ValueError(f"unknown metric '{name}': use {', '.join(f'{m}@k' for m in FUNCTIONS)}") from None


def load_suite(path: Path) -> Suite:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Suite {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read suite {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping with name, thresholds and cases")
    if data.get("cases_file"):
        data["cases"] = list(data.get("cases") or []) + _read_jsonl(path.parent / data["cases_file"], path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, data, path)) from None
    ids = [c.id for c in suite.cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}: duplicate case id(s) {', '.join(dupes)}")
    if not suite.cases:
        raise ConfigError(f"{path}: the suite has no cases")
    return suite


def _read_jsonl(file: Path, suite: Path) -> list[dict]:
    out = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{suite}: cases_file {file} cannot be read ({exc.strerror})") from None
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file} line {n}: invalid JSON ({exc.msg})") from None
    return out


def _branch(part) -> bool:
    """A union's branch in an error's location: ``expected`` is a path (str) or a Graded mapping."""
    return isinstance(part, str) and (part == "str" or part[:1].isupper())


def _explain(exc: ValidationError, data: dict, path: Path) -> str:
    errors = exc.errors()
    # a union reports each branch: the one meant is the one that is not a plain type mismatch
    # ({source: x, grade: -1} is no string, and that is not its problem)
    err = next((e for e in errors if not (e["type"].endswith("_type") and any(map(_branch, e["loc"])))), errors[0])
    loc = [p for p in err["loc"] if not _branch(p)]
    where = ".".join(str(p) for p in loc)
    if loc[:1] == ["cases"] and len(loc) > 1 and isinstance(loc[1], int):
        case = (data.get("cases") or [])[loc[1]]
        name = case.get("id") if isinstance(case, dict) and case.get("id") else f"#{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:] if not isinstance(p, int)) or "case"
        items = [str(p + 1) for p in loc[2:] if isinstance(p, int)]  # a list's item, counted from 1
        where = f"case '{name}': '{field}'" + (f" (item {', '.join(items)})" if items else "")
    else:
        where = f"'{where}'"
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field"
    elif err["type"] == "value_error":  # our own message, without pydantic's label
        return f"{path}: {where}: {msg.removeprefix('Value error, ')}"
    else:  # "Input should be a valid string" -> "should be a valid string, got [1]"
        msg = msg[0].lower() + msg[1:] if msg else msg
        msg = msg.removeprefix("input ") + (f", got {err['input']!r}" if "input" in err else "")
    return f"{path}: {where} {msg}"


def matches(spec: str, doc_id: str, source: str) -> bool:
    """An expected source: a doc id, a path (or its tail), a glob, or a JSONL record id."""
    return (spec in (doc_id, source) or source.endswith("/" + spec) or doc_id.endswith("#" + spec)
            or fnmatch.fnmatch(source, spec) or fnmatch.fnmatch(source, "*/" + spec))
