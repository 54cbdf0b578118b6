"""One llmctl process of tests/test_shared_state.py: asks the model through the gateway, as
`llmctl query` and `serve` do (config file, data dir, state backend), on the test's command.

stdin: one JSON object per line, {"id": ..., "ask": question}; each is asked on its own thread
(a gateway each, like serve's requests), so a process can have several calls in flight.
stdout: one JSON line per answer: id, and text/cache/provider or error/type/exit_code.
A crash (anything but an llmctl error) prints its traceback on stderr, which the test rejects.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from pathlib import Path

from llmctl.config import load_config
from llmctl.datadir import DataDir
from llmctl.errors import LlmctlError
from llmctl.llm.gateway import Gateway

cfg = load_config(Path(sys.argv[1]), {"data_dir": sys.argv[2]})
out_lock = threading.Lock()


def say(obj: dict) -> None:
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def ask(rid, question: str) -> None:
    try:
        gw = Gateway(cfg.llm, DataDir(cfg.data_dir), config_source=cfg.source, command="query", tag="team",
                     warn=warn, state=cfg.state)
        try:
            comp = gw.complete([{"role": "user", "content": question}], question=question,
                               chunk_ids=["c1"], sources=[])
            say({"id": rid, "text": comp.text, "cache": comp.cache, "provider": comp.provider})
        finally:
            gw.close()
    except LlmctlError as exc:
        say({"id": rid, "error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code})
    except BaseException:
        traceback.print_exc()
        say({"id": rid, "crash": True})


say({"ready": True})
threads = []
for line in sys.stdin:
    msg = json.loads(line)
    t = threading.Thread(target=ask, args=(msg["id"], msg["ask"]))
    t.start()
    threads.append(t)
for t in threads:
    t.join()
