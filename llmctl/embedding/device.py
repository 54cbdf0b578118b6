"""``embedding.device: auto``: a GPU when torch can use one, else the CPU, found without importing
torch on machines that show no GPU (importing it costs ~1.4 s, and CPU queries never need it);
``embedding.threads: 0``: as many compute threads as this process may use CPUs; and how texts are
grouped for a CPU (``padded_groups``)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

PADDED_TOKENS = 1024  # per graph run on a CPU; bench/onnx_batching.py


def _gpu_hint() -> bool:
    """Cheap signs that a GPU may be there: an NVIDIA driver, or Apple silicon (MPS)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return platform.system() == "Darwin" and platform.machine() == "arm64"
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or Path("/dev/nvidia0").exists() or (
        platform.system() == "Darwin" and platform.machine() == "arm64")


@functools.cache
def _detect() -> str:
    if not _gpu_hint():
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (a container
    started with --cpus 2 on a 64-core host gets 2). onnxruntime's own default counts the host's
    cores and pins its threads to them, which oversubscribes such containers and collides with a
    second process on the same cores (bench/onnx_threads.py)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def threads(configured: int) -> int:
    """Compute threads for a model: ``embedding.threads``, or 0 for ``usable_cpus()``."""
    return configured or usable_cpus()


def torch_threads(device: str, count: int) -> None:
    """torch's compute threads (``threads(configured)``) when a model of it runs on the CPU: for the
    whole process, since torch has no per-model setting. Its own default counts the host's cores,
    like onnxruntime's."""
    if device == "cpu":
        import torch

        torch.set_num_threads(count)


def resolve(device: str) -> str:
    """The device to run on: ``device`` itself unless it is ``auto``; one torch does not know
    (``tpu:0``) is a ConfigError naming embedding.device, not a failed model load."""
    if device == "auto":
        return _detect()
    if device != "cpu":
        import torch

        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            from llmctl.errors import ConfigError

            raise ConfigError(f"embedding.device '{device}' is not a device torch knows: "
                              "use auto, cpu, cuda, cuda:N or mps") from None
    return device


def padded_groups(lengths: list[int]) -> list[list[int]]:
    """The texts of these token counts, longest first, cut into groups whose padded size (count x
    longest) stays within PADDED_TOKENS; a text longer than that runs alone. For a CPU: a GPU
    wants big batches."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= PADDED_TOKENS:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
