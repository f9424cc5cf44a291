"""A/B slots: two directories for release files and a `current` symlink to the live one.

    DATA/release/slots/a/   files of one release + slot.json (what is in it)
    DATA/release/slots/b/
    DATA/release/current -> slots/a

A new release is unpacked into the standby slot while the live one keeps serving; the
switch is one `rename` of a new symlink over `current`, which is atomic, so a crash leaves
either the old slot or the new one live, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgefleet.atomicfile import write_json_atomically

MANIFEST = "slot.json"


class SlotName(StrEnum):
    A = "a"
    B = "b"


class Slots:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._current = root / "current"
        (root / "slots").mkdir(parents=True, exist_ok=True)

    def path(self, slot: SlotName) -> Path:
        return self.root / "slots" / slot.value

    def active(self) -> SlotName | None:
        """The live slot, or None before the first install."""
        try:
            target = os.readlink(self._current)
        except FileNotFoundError:
            return None
        return SlotName(Path(target).name)

    def standby(self) -> SlotName:
        return SlotName.B if self.active() is SlotName.A else SlotName.A

    def clear(self, slot: SlotName) -> Path:
        """Empty a slot (never the live one) and return its directory."""
        if slot is self.active():
            raise RuntimeError(f"refusing to clear the live slot {slot}")
        path = self.path(slot)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def switch_to(self, slot: SlotName) -> None:
        """Make `slot` live, atomically."""
        tmp = self.root / "current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("slots") / slot.value, tmp)
        os.replace(tmp, self._current)
        self._sync_root()

    def _sync_root(self) -> None:
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def deactivate(self) -> None:
        """No slot is live any more (the slots keep their files until the next fill)."""
        self._current.unlink(missing_ok=True)
        self._sync_root()

    def manifest(self, slot: SlotName | None) -> dict[str, Any] | None:
        """What a slot holds (written last when it was filled), or None."""
        if slot is None:
            return None
        path = self.path(slot) / MANIFEST
        try:
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        except (FileNotFoundError, ValueError):
            return None

    def write_manifest(self, slot: SlotName, manifest: dict[str, Any]) -> None:
        write_json_atomically(self.path(slot) / MANIFEST, manifest)
