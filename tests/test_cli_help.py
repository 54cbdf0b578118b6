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
    ("tune",): ("llmctl tune [OPTIONS] SUITE", ["SUITE"]),
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
    assert set(EXPECTED) <= with_arguments
    for path, _command in _commands(typer.main.get_command(app)):
        text = _help(*path)
        usage = _usage(text).removeprefix(" ".join(["llmctl", *path, "[OPTIONS]"]))
        for piece in usage.split():  # QUESTION, [FILE], PATH..., [SUITE]...
            assert re.fullmatch(r"[A-Z][A-Z_]*(\.\.\.)?|\[[A-Z][A-Z_]*\](\.\.\.)?", piece), (path, usage)
        for name in _arguments(text):
            assert re.fullmatch(r"[A-Z][A-Z_]*(\.\.\.)?", name), (path, name)
        # options show a plain placeholder too (--cases N), never Typer's type label (--cases <int>)
        assert not re.search(r"^\s+(-\w, )?--[\w-]+ <[a-z]", text, re.M), (path, text)


# -- make demo: the missing model, and the way to add one ----------------------------------

def test_demo_query_names_the_missing_model_and_its_help_shows_how_to_add_one(tmp_path, sample_index):
    """``make demo`` is ``llmctl ingest sample_data`` then ``llmctl query "How many daily
    snapshots..."`` with no config: its last line names llm.providers and points to ``query
    --help``, which shows a provider block that loads as a valid config."""
    import yaml

    from llmctl.config import load_config

    r = invoke("--data-dir", sample_index, "query",
               "How many daily snapshots does the default retention policy keep?", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sample_data/" in r.stdout  # the passages
    said = [line for line in r.stderr.splitlines() if line.strip()]
    assert any("no model configured (llm.providers)" in line and "llmctl query --help" in line
               for line in said), said
    text = _help("query")
    lines = text.splitlines()
    start = lines.index("    llm:")
    block = "\n".join(line[4:] for line in lines[start:lines.index("", start)])
    assert "providers:" in block and "api_key_env:" in block
    config = tmp_path / "llmctl.yaml"
    config.write_text(block + "\n")
    [provider] = load_config(config).llm.providers
    assert (provider.model, provider.api_key_env) == ("gpt-4o-mini", "OPENAI_API_KEY")
    assert yaml.safe_load(block)["llm"]["providers"][0]["name"] == "openai"
    assert "llmctl trust" in text  # the one step a found ./llmctl.yaml needs
