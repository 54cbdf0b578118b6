import os

from llmctl.config import IngestConfig
from llmctl.ingest.discover import discover


def names(root, cfg=None):
    skipped = []
    found = [f.path.relative_to(root).as_posix() for f in discover([root], cfg or IngestConfig(), skipped)]
    return found, skipped


def test_defaults_skip_vcs_virtualenvs_and_unknown_types(tmp_path):
    for rel in ["a.md", "sub/b.py", ".git/config.md", ".venv/lib/x.py", "node_modules/m/readme.md",
                "img.png", "sub/deep/c.txt", "a.md~", "sub/#b.md#", "sub/.#b.md"]:  # editors' backups too
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


def _tree(root, rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")


def taken(root, **globs):
    return sorted(names(root, IngestConfig(**globs))[0])


def test_globs_with_a_slash_match_the_path_under_the_folder(tmp_path):
    _tree(tmp_path, ["guides/a.md", "guides/sub/b.md", "guides/c.txt", "api/v1/ref.md", "api/v2/ref.md",
                     "x/api/v1/deep.md", "top.md"])
    assert taken(tmp_path, include=["guides/*.md"]) == ["guides/a.md"]  # * stays in a folder
    assert taken(tmp_path, include=["/guides/*.md"]) == ["guides/a.md"]
    assert taken(tmp_path, include=["guides/**/*.md"]) == ["guides/a.md", "guides/sub/b.md"]
    assert taken(tmp_path, include=["**/v1/*.md"]) == ["api/v1/ref.md", "x/api/v1/deep.md"]
    assert taken(tmp_path, include=["guides/sub"]) == ["guides/sub/b.md"]  # a folder: all in it
    assert taken(tmp_path, include=["*.md"]) == [  # no "/": the file name, at any depth
        "api/v1/ref.md", "api/v2/ref.md", "guides/a.md", "guides/sub/b.md", "top.md", "x/api/v1/deep.md"]
    assert taken(tmp_path, include=["*.md"], exclude=["api/*/ref.md", "guides/**/b.md"]) == [
        "guides/a.md", "top.md", "x/api/v1/deep.md"]
    assert taken(tmp_path, exclude=["api"]) == [  # no "/": any folder name on the path
        "guides/a.md", "guides/c.txt", "guides/sub/b.md", "top.md"]


def test_is_taken_agrees_with_the_walk(tmp_path):
    from llmctl.ingest.discover import is_taken

    rels = ["guides/a.md", "guides/sub/b.md", "guides/c.txt", "api/v1/ref.md", "top.md"]
    _tree(tmp_path, rels)
    for cfg in (IngestConfig(include=["guides/*.md"]), IngestConfig(include=["**/*.md"], exclude=["api/**"]),
                IngestConfig(include=["*.md", "guides/*.txt"], exclude=["sub"])):
        found, _ = names(tmp_path, cfg)
        assert sorted(found) == sorted(r for r in rels if is_taken(tmp_path / r, tmp_path, cfg)), cfg


def unlistable(monkeypatch, *folders):
    """os.scandir raising PermissionError for ``folders``, as for a folder chmod 000 to a user who
    is not root (tests run as root, whom chmod does not stop)."""
    real = os.scandir
    blocked = {str(f) for f in folders}

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    _tree(tmp_path, ["a.md", "locked/b.md", "locked/deeper/c.md"])
    unlistable(monkeypatch, tmp_path / "locked")
    found, skipped = names(tmp_path)
    assert found == ["a.md"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "locked"),
                                                      "cannot list folder: Permission denied")]
