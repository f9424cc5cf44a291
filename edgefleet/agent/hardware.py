"""Hardware: what the agent learns about the machine it runs on.

`Hardware` is the port; `HostHardware` reads the real machine (platform, os, psutil when
installed). The simulator provides its own implementation.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Protocol

from edgefleet import __version__


class Hardware(Protocol):
    def inventory(self) -> dict[str, Any]:
        """`{"hardware": {...}, "software": {...}}` as the device protocol's Inventory."""
        ...

    def durable(self, moment: str) -> None:
        """The agent has just made `moment` durable (`install:<state>`: the install journal
        at that step): where a simulated machine may lose power (sim/hardware.py). A real
        machine does nothing."""
        ...


def _memory_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total // (1024 * 1024))
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))


def _package_version(name: str) -> str | None:
    """The installed version of distribution `name`, from its `.dist-info/METADATA` on
    sys.path (importlib.metadata would cost the idle agent ~1.5 MB of email/zipfile/csv
    modules for this one read at start-up)."""
    folded = re.sub(r"[-_.]+", "_", name).lower()
    for entry in sys.path:
        try:
            found = [
                d
                for d in Path(entry or ".").glob("*.dist-info")
                if re.sub(r"[-_.]+", "_", d.name.split("-")[0]).lower() == folded
            ]
        except OSError:
            continue
        for dist in found:
            try:
                head = (dist / "METADATA").read_text(errors="replace").split("\n\n", 1)[0]
            except OSError:
                continue
            match = re.search(r"^Version:[ \t]*(\S+)", head, re.MULTILINE)
            if match:
                return match.group(1)
    return None


def _os_version() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.release())
    except OSError:
        return platform.release()


# Free disk is reported in steps of this many MiB, rounded down: fine enough for release
# requirements (`min_disk_mb`), coarse enough that the inventory, which heartbeats carry only
# when it changed, does not change with every log line the device writes.
DISK_STEP_MB = 64


class HostHardware:
    """The machine the agent runs on. Static facts are read once; free disk every call."""

    def __init__(self, data_dir: Path, accelerators: list[str] | None = None) -> None:
        self._data_dir = data_dir
        self._static = {
            "arch": platform.machine() or "unknown",
            "cpu_count": os.cpu_count() or 1,
            "memory_mb": _memory_mb(),
            "accelerators": list(accelerators or []),
        }
        self._software = {
            "os": platform.system().lower(),
            "os_version": _os_version()[:128],
            "python": platform.python_version(),
            "agent_version": __version__,
            "onnxruntime": _package_version("onnxruntime"),
        }

    def durable(self, moment: str) -> None:
        pass

    def inventory(self) -> dict[str, Any]:
        free_mb = shutil.disk_usage(self._data_dir).free // (1024 * 1024)
        free_mb -= free_mb % DISK_STEP_MB
        return {
            "hardware": {**self._static, "disk_mb": int(free_mb)},
            "software": dict(self._software),
        }
