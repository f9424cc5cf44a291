"""Atomic files: a write that is either wholly on disk or not there at all.

Write to a temporary file in the same directory, fsync it, rename it over the target and
fsync the directory, so a crash at any instant leaves the old content or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably, with file permissions `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomically(path: Path, value: Any, mode: int = 0o644) -> None:
    """Serialize `value` as indented JSON and write it atomically."""
    write_atomically(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), mode)
