"""embedding.device: auto resolves without importing torch on a machine without a GPU driver."""

from __future__ import annotations

import json
import subprocess
import sys

from cli import assert_clean_error, invoke
from conftest import REPO

from llmctl.embedding.device import resolve


def test_explicit_devices_are_kept_and_auto_needs_no_torch_without_a_gpu():
    assert resolve("cpu") == "cpu" and resolve("cuda:1") == "cuda:1" and resolve("mps") == "mps"
    out = subprocess.run([sys.executable, "-c", "import sys; from llmctl.embedding.device import resolve; "
                          "print(resolve('auto'), 'torch' in sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    from llmctl.embedding.device import _gpu_hint

    if _gpu_hint():  # a machine with a GPU driver: torch decides
        assert out[0] in ("cuda", "mps", "cpu")
    else:
        assert out == ["cpu", "False"]


def test_the_device_used_is_in_status_and_a_bad_one_is_a_config_error(data, tmp_path):
    r = invoke("--data-dir", data, "status", "--json", cwd=REPO)
    assert json.loads(r.stdout)["index"]["embedded_with"]["device"] == resolve("auto")
    assert f"on {resolve('auto')}" in invoke("--data-dir", data, "status", cwd=REPO).stdout
    cfg = tmp_path / "c.yaml"
    cfg.write_text("embedding:\n  device: 'gpu please'\n")
    assert_clean_error(invoke("--config", cfg, "--data-dir", data, "status", cwd=REPO), 3, "embedding.device")
