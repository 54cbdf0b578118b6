"""Help shows each argument as it is typed (issue 30): ``PATH...`` in the usage line and the
argument list, not Typer's ``{PATH}...`` or ``PATH <list[Path]>``."""

from __future__ import annotations

import re

import pytest
from cli import invoke

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The usage line and argument list of every command that takes arguments, as a user types them.
EXPECTED = {
    ("ingest",): ("llmctl ingest [OPTIONS] PATH...", ["PATH..."]),
    ("remove",): ("llmctl remove [OPTIONS] PATH...", ["PATH..."]),
    ("eval",): ("llmctl eval [OPTIONS] [SUITE]...", ["SUITE..."]),
    ("query",): ("llmctl query [OPTIONS] QUESTION", ["QUESTION"]),
    ("trust",): ("llmctl trust [OPTIONS] [FILE]", ["FILE"]),
    ("models", "pull"): ("llmctl models pull [OPTIONS] [NAME]", ["NAME"]),
}


def _help(*command: str) -> str:
    result = invoke(*command, "--help", env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    return ANSI.sub("", result.stdout)


def _usage(text: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith("Usage: "))
    return line.removeprefix("Usage: ").strip()


def _arguments(text: str) -> list[str]:
    """The names in the help's "Arguments:" section (the first column)."""
    lines = text.splitlines()
    if "Arguments:" not in lines:
        return []
    names = []
    for line in lines[lines.index("Arguments:") + 1:]:
        if not line.strip():
            break
        if line.startswith("  ") and not line.startswith("   "):
            names.append(line.split("  ")[1].strip())
    return names


@pytest.mark.parametrize("command", list(EXPECTED), ids=" ".join)
def test_usage_line_and_argument_list_show_plain_placeholders(command):
    text = _help(*command)
    usage, arguments = EXPECTED[command]
    assert _usage(text) == usage
    assert _arguments(text) == arguments


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_with_arguments_is_checked_and_none_shows_typer_artefacts():
    import typer

    from llmctl.cli import app

    with_arguments = {path for path, command in _commands(typer.main.get_command(app))
                      if any(p.param_type_name == "argument" for p in command.params)}
    assert with_arguments == set(EXPECTED), "a command gained or lost an argument: add it to EXPECTED"
    for path, _command in _commands(typer.main.get_command(app)):
        text = _help(*path)
        shown = " ".join([_usage(text), *_arguments(text)])
        assert not re.search(r"[{}<>]|\[\[", shown), (path, shown)
