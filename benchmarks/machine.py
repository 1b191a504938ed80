"""The machine description every benchmark result file starts with (CPU, Python, packages)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from collections.abc import Sequence
from pathlib import Path


def describe(packages: Sequence[str]) -> list[str]:
    """Markdown bullet lines: CPU model and cores with torch's thread count, Python and OS, and
    the installed version of each of ``packages``."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    import torch

    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores, no GPU; torch threads {torch.get_num_threads()}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- Packages: {', '.join(versions)}",
    ]
