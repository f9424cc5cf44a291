"""What the agent measures (agent/attestation.py): slot files as they are on disk, hashed
again whenever a file changed, even when its size and mtime were put back."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from edgefleet.agent.attestation import FileHashes, measure_agent_code, measure_slots
from edgefleet.agent.slots import SlotName, Slots


def test_a_file_rewritten_with_its_old_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights-1")
    hashes = FileHashes()
    assert hashes.sha256(model) == hashlib.sha256(b"weights-1").hexdigest()
    before = model.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity: the ctime moves on
    model.write_bytes(b"weights-2")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert model.stat().st_size == before.st_size
    assert hashes.sha256(model) == hashlib.sha256(b"weights-2").hexdigest()


def test_slots_are_measured_file_by_file_and_a_missing_file_is_named(tmp_path: Path) -> None:
    slots = Slots(tmp_path / "release")
    directory = slots.clear(SlotName.A)
    (directory / "m.onnx").write_bytes(b"model")
    slots.write_manifest(
        SlotName.A,
        {
            "release": "vision",
            "version": "1.0.0",
            "files": {"model": "m.onnx", "service": "s.json"},
        },
    )
    assert measure_slots(slots, FileHashes()) == {
        "a": {
            "release": "vision",
            "version": "1.0.0",
            "files": {"model": hashlib.sha256(b"model").hexdigest(), "service": "missing"},
        }
    }


def test_the_agent_code_digest_covers_every_file_but_compiled_caches(tmp_path: Path) -> None:
    package = tmp_path / "edgefleet"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    first = measure_agent_code(package, FileHashes())
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\1")
    assert measure_agent_code(package, FileHashes()) == first and first["files"] == 1
    (package / "a.py").write_text("x = 2\n")
    assert measure_agent_code(package, FileHashes())["sha256"] != first["sha256"]
