from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmctl.config import Config, load_config
from llmctl.index.embedder import Embedder

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No user config or LLMCTL_* variable leaks into a test; cwd is a fresh folder."""
    import os

    for name in list(os.environ):
        if name.startswith("LLMCTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real default model (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    return Embedder(Config().embedding)


@pytest.fixture
def make_config(tmp_path):
    def make(**overrides) -> Config:
        overrides.setdefault("data_dir", str(tmp_path / "data"))
        return load_config(None, overrides)

    return make


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of sample_data that a test may change."""
    dest = tmp_path / "docs"
    shutil.copytree(SAMPLE, dest)
    return dest
