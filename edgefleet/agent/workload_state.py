"""A workload's state directory as one file: archived on a migration's source, unpacked on
its target after the archive's sha256 was checked.

The archive is a gzip-compressed tar of the directory's contents (relative paths). Unpacking
uses tarfile's `data` filter: no absolute paths, no `..`, no links leaving the directory, no
device files; anything else is refused (InvalidInput). The target directory is replaced as a
whole: unpacked beside it, then swapped in with renames.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from edgefleet.errors import InvalidInput

CHUNK_BYTES = 1 << 20


def archive_state(state_dir: Path, archive: Path) -> tuple[str, int]:
    """Write `state_dir`'s contents to `archive`; returns (sha256, size in bytes)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(archive.name + ".part")
    import tarfile  # migrations only: not loaded in an idle agent

    with tarfile.open(part, "w:gz") as tar:
        for path in sorted(state_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(state_dir)), recursive=False)
    os.replace(part, archive)
    return sha256_of(archive), archive.stat().st_size


def restore_state(archive: Path, expected_sha256: str, state_dir: Path) -> None:
    """Replace `state_dir` with the archive's contents, after checking its sha256."""
    actual = sha256_of(archive)
    if actual != expected_sha256:
        raise InvalidInput(
            f"state archive sha256 {actual[:12]} does not match the expected "
            f"{expected_sha256[:12]}", code="hash_mismatch",
        )  # fmt: skip
    fresh = state_dir.with_name(state_dir.name + ".restoring")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(fresh, filter="data")
    except (tarfile.TarError, OSError) as e:
        shutil.rmtree(fresh, ignore_errors=True)
        raise InvalidInput(f"state archive refused: {e}", code="bad_state_archive") from None
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(fresh, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
