"""``embedding.device: auto``: a GPU when torch can use one, else the CPU, found without importing
torch on machines that show no GPU (importing it costs ~1.4 s, and CPU queries never need it)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


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


def resolve(device: str) -> str:
    """The device to run on: ``device`` itself unless it is ``auto``."""
    return _detect() if device == "auto" else device
