"""The README documents every command and every exit code (sqlite-utils' test_docs idea)."""

import re
from pathlib import Path

import pytest

from llmctl import errors
from llmctl.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BY_NAME = {c.name or c.callback.__name__.replace("_", "-"): c for c in app.registered_commands}
COMMANDS = sorted(BY_NAME)


def test_every_command_exists():
    assert set(COMMANDS) == {"ingest", "remove", "query", "eval", "generate", "status", "cost-report",
                             "cache-stats", "serve", "mcp", "trust", "tune"}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_an_example_and_is_in_the_readme(command):
    assert "Example:" in (BY_NAME[command].callback.__doc__ or "")
    assert f"llmctl {command}" in README


def test_every_exit_code_is_documented():
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.LlmctlError)}
    table = set(int(c) for c in re.findall(r"^\| (\d+) \|", README, re.M))
    assert codes <= table


def test_readme_python_api_example_runs(tmp_path):
    """The README's Python API block, run as written from a folder holding sample_data/."""
    import shutil
    import subprocess
    import sys

    block = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copytree(Path(__file__).resolve().parent.parent / "sample_data", tmp_path / "sample_data")
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "retention-policies.md" in lines[0] and int(lines[-1]) > 50
