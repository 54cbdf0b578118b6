import os

from llmctl.config import IngestConfig
from llmctl.ingest.discover import discover


def names(root, cfg=None):
    skipped = []
    found = [f.path.relative_to(root).as_posix() for f in discover([root], cfg or IngestConfig(), skipped)]
    return found, skipped


def test_defaults_skip_vcs_virtualenvs_and_unknown_types(tmp_path):
    for rel in ["a.md", "sub/b.py", ".git/config.md", ".venv/lib/x.py", "node_modules/m/readme.md",
                "img.png", "sub/deep/c.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    found, _ = names(tmp_path)
    assert found == ["a.md", "sub/b.py", "sub/deep/c.txt"]


def test_include_and_path_exclude_globs(tmp_path):
    for rel in ["keep/a.md", "drop/b.md", "keep/c.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    found, _ = names(tmp_path, IngestConfig(include=["*.md"], exclude=["drop/*"]))
    assert found == ["keep/a.md"]


def test_symlinks_not_followed_by_default_and_loops_detected(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text("x")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    outside = tmp_path.parent / (tmp_path.name + "-outside.md")
    outside.write_text("secret")
    os.symlink(outside, tmp_path / "d" / "out.md")
    found, skipped = names(tmp_path)
    assert found == ["d/a.md"]
    assert {s.reason.split(" (")[0] for s in skipped} == {"symlink not followed"}

    found, skipped = names(tmp_path, IngestConfig(follow_symlinks=True))
    assert found == ["d/a.md"]
    reasons = " ".join(s.reason for s in skipped)
    assert "symlink loop" in reasons and "outside the ingest root" in reasons
