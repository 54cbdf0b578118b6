"""What a user installs: the declared dependencies match the imports, and the wheel works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_every_import_is_declared_and_every_dependency_used():
    """deptry: an import that pyproject.toml does not declare works only where it happens to be installed."""
    r = subprocess.run([sys.executable, "-m", "deptry", "llmctl"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lock_pins_every_package_with_hashes():
    """requirements.lock: exact versions with hashes, the CPU build of torch, no machine paths."""
    text = (REPO / "requirements.lock").read_text()
    pins = [line for line in text.splitlines() if line and not line.startswith((" ", "#", "-"))]
    assert len(pins) > 50
    assert all("==" in pin for pin in pins), [p for p in pins if "==" not in p]
    assert text.count("--hash=sha256:") >= len(pins)
    assert any(pin.startswith("torch==") and pin.split()[0].endswith("+cpu") for pin in pins)
    assert "file://" not in text and "--find-links" not in text


@pytest.mark.slow
def test_wheel_installed_outside_the_repo_ingests_and_queries(tmp_path):
    """`python -m build` makes a wheel; installed in a fresh venv it runs from another folder.

    The fresh venv sees this venv's third-party packages through a path entry (installing torch
    again would take minutes and the network), not llmctl: its editable install is not on that path."""
    # The new venv's commands run without PYTHONPATH: with a checkout on it, pip would take llmctl
    # as installed already (and skip the wheel) and the import would find the checkout.
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR") and k != "PYTHONPATH"}
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheel = next(dist.glob("llmctl-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    work = tmp_path / "elsewhere"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "retention.md").write_text(
        "# Retention\n\nThe default retention policy keeps 14 daily snapshots and 8 weekly ones.\n")
    llmctl = env_dir / "bin" / "llmctl"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(llmctl), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)

    where = subprocess.run([str(py), "-c", "import llmctl; print(llmctl.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where  # the wheel's copy, not the checkout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("llmctl "), version.stderr
    ingest = run("ingest", "-q", "docs")
    assert ingest.returncode == 0, ingest.stderr
    query = run("query", "--json", "--no-llm", "How many daily snapshots are kept?")
    assert query.returncode == 0, query.stderr
    assert "14 daily snapshots" in query.stdout
