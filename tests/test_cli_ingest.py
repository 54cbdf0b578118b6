import json

from cli import assert_clean_error, invoke, run_cli

from llmctl.datadir import DataDir


def test_help_lists_every_command():
    r = invoke("--help")
    assert r.returncode == 0
    listed = r.stdout.split("\nCommands:\n", 1)[1]  # the app's description names some commands too
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.strip()}
    assert {"ingest", "remove", "query", "eval", "generate", "cost-report", "cache-stats", "status", "serve",
            "mcp", "trust"} <= names


def test_ingest_json_report_then_noop(tmp_path, corpus):
    data = tmp_path / "data"
    docs = corpus / "guides"
    r = invoke("--data-dir", data, "ingest", docs, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["files"]["seen"] == report["files"]["added"] == 8
    assert report["chunks"]["added"] == report["chunks"]["total"] > 8
    assert r.stderr == ""  # no progress bars when stderr is not a terminal
    r = invoke("--data-dir", data, "ingest", docs, cwd=tmp_path)
    assert r.returncode == 0
    assert "0 added, 0 changed, 8 unchanged" in r.stdout


def test_skipped_files_are_warnings_not_failures(tmp_path):
    (tmp_path / "ok.md").write_text("# Fine\n\nA normal document.\n")
    (tmp_path / "bad.md").write_bytes("na\xefve caf\xe9 ".encode() + b"\xff\xfa")  # damaged UTF-8
    r = invoke("--data-dir", tmp_path / "data", "ingest", tmp_path, cwd=tmp_path)
    assert r.returncode == 0
    assert "skipped" in r.stderr and "bad.md" in r.stderr and "not valid UTF-8" in r.stderr
    assert "Ingested 1 file(s): 1 added, 0 changed, 0 unchanged, 0 removed, 1 skipped" in r.stdout  # not 2
    r = invoke("--data-dir", tmp_path / "data2", "ingest", "--strict", tmp_path, cwd=tmp_path)
    assert_clean_error(r, 4, "bad.md", "--strict")
    r = invoke("--data-dir", tmp_path / "data3", "ingest", "--json", tmp_path, cwd=tmp_path)  # stdout: the report
    assert r.returncode == 0 and any(s["path"] == "bad.md" for s in json.loads(r.stdout)["files"]["skipped_files"])
    assert "Warning: skipped bad.md: not valid UTF-8" in r.stderr, r.stderr


def test_strict_stops_at_damaged_files_not_at_what_is_left_out_by_design(tmp_path):
    """A Debian doc folder under --strict: a symlink not followed and a file of no readable type are
    left out by design; a damaged archive with no extension inside (NEWS.gz) is bad input, named as
    the warnings name it (relative to the cwd)."""
    import gzip

    docs = tmp_path / "docs"
    (docs / "notes").mkdir(parents=True)
    (docs / "good.md").write_text("# Good\n\nA normal document.\n")
    (docs / "changelog.md").symlink_to(docs / "good.md")
    (docs / "prog").write_bytes(b"\x7fELF\x00\x01\x02 not text")
    (docs / "notes" / "NEWS.gz").write_bytes(gzip.compress(b"Release 2.0\n" * 400)[:60])  # cut short
    r = invoke("--data-dir", tmp_path / "data", "ingest", "--strict", "docs", cwd=tmp_path)
    assert_clean_error(r, 4, "docs/notes/NEWS.gz: not a valid gzip file", "--strict")
    assert str(tmp_path) not in r.stderr
    (docs / "notes" / "NEWS.gz").unlink()
    r = invoke("--data-dir", tmp_path / "data", "ingest", "--strict", "--json", "docs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    reasons = {s["path"]: s["reason"] for s in json.loads(r.stdout)["files"]["skipped_files"]}
    assert reasons == {"docs/changelog.md": "symlink not followed (ingest.follow_symlinks)",
                       "docs/prog": "unsupported type"}


def test_an_include_that_matches_nothing_is_named_and_dry_run_shows_odd_names_as_sources_do(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "new\nline [red]x.md").write_text("# A\n\nA document with an odd name.\n")
    (docs / "loop").symlink_to(docs)  # a folder link, skipped by design whatever the filters: not the reason
    r = invoke("--data-dir", tmp_path / "data", "ingest", "docs", "--include", "*.nomatch", cwd=tmp_path)
    assert_clean_error(r, 4, "none matches include ['*.nomatch']", "--include")
    r = invoke("--data-dir", tmp_path / "data", "ingest", "docs", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "  would add: docs/new\\nline [red]x.md\n" in r.stdout, r.stdout


def test_missing_path(tmp_path):
    """Through a real process: exit 4 as a shell sees it."""
    assert_clean_error(run_cli("ingest", tmp_path / "nope", cwd=tmp_path), 4, "nope", "does not exist")


def test_malformed_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunking:\n  max_tokens: lots\n")
    r = run_cli("--config", cfg, "ingest", tmp_path, cwd=tmp_path)  # a real process: exit 3 as a shell sees it
    assert_clean_error(r, 3, str(cfg), "chunking.max_tokens")
    r = invoke("ingest", tmp_path, cwd=tmp_path, env={"LLMCTL_CONFIG": str(tmp_path / "missing.yaml")})
    assert_clean_error(r, 3, "missing.yaml")


def test_chunk_size_over_the_model_window_is_refused(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    r = invoke("ingest", tmp_path, cwd=tmp_path, env={"LLMCTL_CHUNKING__MAX_TOKENS": "400"})
    assert_clean_error(r, 3, "chunking.max_tokens", "254")


def test_busy_data_dir_exit_code(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    with DataDir(tmp_path / "data").write_lock():  # held by this process: the CLI runs in another
        r = run_cli("--data-dir", tmp_path / "data", "ingest", tmp_path, cwd=tmp_path)
    assert_clean_error(r, 6, "Another ingest", "--wait")


def test_corrupt_manifest_is_explained(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.sqlite").write_bytes(b"this is not a database" * 100)
    r = invoke("--data-dir", data, "ingest", tmp_path, cwd=tmp_path)
    assert_clean_error(r, 5, "manifest.sqlite", "--rebuild")


def test_a_rebuild_of_some_folders_never_drops_the_others(tmp_path, corpus):
    """A rebuild makes a new index of the paths it is given: one that would leave indexed files out
    is refused before anything is read, and its --dry-run plans every chunk again."""
    env = {"LLMCTL_DATA_DIR": str(tmp_path / "data")}
    assert invoke("ingest", "-q", corpus / "guides", env=env).returncode == 0
    assert invoke("ingest", "-q", corpus / "policies", env=env).returncode == 0
    before = json.loads(invoke("status", "--json", env=env).stdout)
    for extra in ([], ["--dry-run"]):
        r = invoke("ingest", "--rebuild", *extra, corpus / "guides", env=env)
        assert_clean_error(r, 4, "--rebuild would drop", "policies/", "llmctl remove")
    assert json.loads(invoke("status", "--json", env=env).stdout) == before

    plan = invoke("ingest", "--rebuild", "--dry-run", "--json", corpus / "guides", corpus / "policies", env=env)
    assert plan.returncode == 0, plan.stderr
    total = before["index"]["chunks"]
    assert json.loads(plan.stdout)["chunks"]["added"] == total > 0  # every chunk is embedded again
    done = invoke("ingest", "--rebuild", "--json", corpus / "guides", corpus / "policies", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chunks"]["total"] == total
    # a manifest that cannot be read is what a rebuild replaces
    DataDir(tmp_path / "data").manifest.write_bytes(b"this is not a database" * 100)
    r = invoke("ingest", "-q", "--rebuild", corpus / "guides", env=env)
    assert r.returncode == 0, r.stderr
