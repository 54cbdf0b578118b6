"""Every error llmctl reports to a user, each with its documented exit code.

Library code raises these; only ``cli.py`` turns them into ``Error: ...`` on
stderr and an exit code. Anything else is a bug and keeps its traceback.

Exit codes (also in the README):
    0  success
    1  unexpected internal error (a bug: please report it)
    2  invalid usage: a bad flag, or a bad argument to the API (UsageError; HTTP 400, MCP tool error)
    3  ConfigError
    4  InputError
    5  IndexStateError (no index, or built with other settings)
    6  BusyError (another ingest holds the data dir)
    7  ProviderError (the LLM endpoint failed, refused the key, or is unreachable; or the shared
       state (state.backend: redis) is, under a budget or rate limit; models pull: the Hugging Face
       hub is unreachable, or a file arrived truncated or corrupt)
    8  BudgetExceeded (a configured spend limit would be exceeded)
    9  EvalGateFailed (quality below a threshold, or regressed beyond the allowed drop)
   10  SpendAlert (cost-report --alerts: spend, calls or error rate far above the trailing baseline)
  130  Interrupted (Ctrl-C or SIGTERM; nothing is left half-written, committed work is kept: run again)
"""

from __future__ import annotations


class LlmctlError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class UsageError(LlmctlError):
    """A value given to the API or a flag is invalid (the CLI's exit 2, serve's 400, an MCP tool error).

    ``param`` names the argument (``bm25_k``): the API reads "bm25_k: ...", the CLI "--bm25-k: ..."."""

    exit_code = 2

    def __init__(self, message: str, param: str | None = None):
        super().__init__(f"{param}: {message}" if param else message)
        self.param, self.detail = param, message

    def as_flag(self) -> str:
        """The message as the CLI shows it, naming the flag."""
        return f"--{self.param.replace('_', '-')}: {self.detail}" if self.param else str(self)


class ConfigError(LlmctlError):
    """The configuration file or an override is invalid."""

    exit_code = 3


class InputError(LlmctlError):
    """A path, file or argument given by the user cannot be used."""

    exit_code = 4


class OutputError(InputError):
    """stdout, stderr or a report file could not be written (disk full, closed, I/O error)."""


class IndexStateError(LlmctlError):
    """The index is missing, or was built with settings that differ from the config."""

    exit_code = 5


class BusyError(LlmctlError):
    """Another llmctl process is writing to the same data directory."""

    exit_code = 6


class ProviderError(LlmctlError):
    """The language model provider could not give an answer."""

    exit_code = 7


class SharedStateUnavailable(ProviderError):
    """state.backend: redis is unreachable, so a budget or rate limit cannot be held across machines
    (state.on_unavailable: refuse). Exit 7 like any dependency of the model call that is down: the
    budget was not found exceeded, it could not be checked."""


class BudgetExceeded(LlmctlError):
    """A daily or monthly spend limit would be exceeded by this call."""

    exit_code = 8


class EvalGateFailed(LlmctlError):
    """An eval suite ran, and its quality gate failed."""

    exit_code = 9


class SpendAlert(LlmctlError):
    """cost-report --alerts found a day or hour far above its trailing baseline (after the report)."""

    exit_code = 10


class Interrupted(LlmctlError):
    """Stopped by Ctrl-C or SIGTERM after keeping the finished work; printed without 'Error:'."""

    exit_code = 130


def printable(text: str) -> str:
    """A path or name safe for a one-line message: control characters shown escaped, and a byte
    that was not UTF-8 (a file name's, kept by the OS as a surrogate escape) as \\xNN."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff"
                   else ch.encode("unicode_escape").decode() for ch in text)
