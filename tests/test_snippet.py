"""The terminal snippet: the lines of a hit that answer, not the start of the chunk or a heading alone."""

import re

from llmctl.search.snippet import best_window

STOP = {"how", "do", "i", "a", "from", "the", "what", "does", "is", "many", "are"}


def tokenize(text: str) -> list[str]:  # lowercase, crude plural stem, stopwords out (as BM25's tokenizer does)
    return [w.lower().rstrip("s") for w in re.findall(r"\w+", text) if w.lower() not in STOP]


def test_the_lines_with_most_question_terms_and_tables_keep_their_rows():
    text = ("# Retention\n\nSnapshots are pruned nightly by the daemon.\n\n| Bucket | Snapshots kept |\n|---|---|\n"
            "| daily | 14 |\n| weekly | 8 |\n")
    w = best_window(text, "How many daily snapshots are kept?", tokenize)
    assert "| daily | 14 |" in w["text"].splitlines() and w["text"].count("\n") >= 1
    assert {"daily", "Snapshots", "kept"} <= set(w["terms"])


def test_a_heading_alone_is_not_the_snippet_the_line_under_it_comes_too():
    text = ("Some introduction about other things entirely.\n\n"
            "### Install multiple packages using a requirements file\n\n"
            "Run pip install -r requirements.txt to install them all.\n")
    w = best_window(text, "How do I install packages from a requirements file?", tokenize)
    assert w["text"].splitlines() == ["### Install multiple packages using a requirements file",
                                      "Run pip install -r requirements.txt to install them all."]


def test_rest_underlines_are_not_shown_and_a_rest_heading_brings_its_text():
    text = "pip check\n=========\n\nVerify installed packages have compatible dependencies.\n\nUsage\n-----\n\nrun it\n"
    w = best_window(text, "What does pip check do?", tokenize)
    assert w["text"].splitlines() == ["pip check", "Verify installed packages have compatible dependencies."]
    code = "```bash\npip check\n```\n"
    assert best_window(code, "bash pip check", tokenize)["text"].splitlines() == ["```bash", "pip check"]


def test_ties_go_to_the_specific_term_and_the_text_under_a_heading_beats_the_heading():
    env = ("Environment variables read by kestrel\n\nKESTREL_REPO    Repository location.\n"
           "KESTREL_PASSWORD_FILE   File with the repository passphrase, read at start-up before anything else.\n"
           "KESTREL_PASSWORD_CMD    Command whose output is the passphrase.\n"
           "KESTREL_LOG_LEVEL  One of error, warn, info.\n"
           "KESTREL_CACHE_DIR       Cache location. Default: ~/.cache/kestrel\n")
    w = best_window(env, "What does the KESTREL_CACHE_DIR variable do?", tokenize)
    assert w["text"] == "KESTREL_CACHE_DIR       Cache location. Default: ~/.cache/kestrel"  # not the title line
    api = ("## Endpoints\n- GET /v1/jobs lists jobs and their next run time.\n"
           "- POST /v1/jobs/{name}/run starts a job.\n"
           "- GET /v1/runs/{id} returns the state of a run: queued, running, succeeded or failed.\n"
           "- GET /v1/snapshots?host=web-01 lists snapshots, newest first, 100 per page.\n")
    w = best_window(api, "Which REST endpoint lists snapshots?", tokenize, heading="REST API > Endpoints")
    assert w["text"] == "- GET /v1/snapshots?host=web-01 lists snapshots, newest first, 100 per page."
