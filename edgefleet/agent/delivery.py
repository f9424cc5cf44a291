"""Delivery: getting a release's files onto the device, verified against signed metadata.

For each file: when a slot already holds the very file (same signed sha256, as when rolling
back to the release in the standby slot, or a file two releases share), copy it and check
the copy against the signed hashes, so nothing crosses the wire; a copy that does not match
(a damaged or altered slot) is dropped and the file fetched. Else, when the live slot holds
an earlier version of the same artifact, ask the
server for a delta and rebuild the new file from it (apply_delta checks the result's
sha256 against the signed hash); on any trouble, or when the server has no worthwhile
delta, download the full file, resuming a partial one with HTTP Range. Either way the
file must match its TUF target (length and hashes) before it is used: the agent hashes
every file itself. The delta codec (numpy) runs in the install helper
(`install_helper.py`), so it never stays loaded in the agent; a helper that fails is a
delta that failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from edgefleet.agent.install_helper import InstallHelper
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.release_verification import VerifiedFile, verify_file
from edgefleet.clock import Clock
from edgefleet.errors import EdgefleetError

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
# While the server computes a delta, ask again this often, this many times, then download
# the full file instead.
DELTA_PENDING_WAIT_S = 2.0
DELTA_PENDING_POLLS = 15


class Delivery:
    def __init__(
        self, downloads: Path, link: ControlPlaneLink, clock: Clock, helper: InstallHelper
    ) -> None:
        self._downloads = downloads
        self._downloads.mkdir(parents=True, exist_ok=True)
        self._link = link
        self._clock = clock
        self._helper = helper

    def path(self, sha256: str) -> Path:
        """Where a verified file waits until it is copied into a slot."""
        return self._downloads / sha256

    async def fetch(
        self,
        infos: list[VerifiedFile],
        bases: Mapping[str, tuple[str, Path]],
        progress: Callable[[int], None],
        on_device: Mapping[str, Path] | None = None,
    ) -> int:
        """Make every target available at `path(sha)`; returns the bytes deltas saved.
        `bases`: artifact name -> (sha256, path) of the live files, for deltas;
        `on_device`: sha256 -> a file on the device said to hold it, reused once verified.
        Raises InvalidInput (`hash_mismatch`) when a full download does not verify."""
        done = 0
        saved = 0
        on_device = on_device or {}
        for info in infos:
            final = self.path(info.sha256)
            copy = on_device.get(info.sha256)
            if not final.exists() and copy is not None:
                self._try_reuse(info, copy, final)
            base = bases.get(info.artifact_name)
            if not final.exists() and base is not None and base[0] != info.sha256:
                saved += await self._try_delta(info, base[1], base[0], final)
            if not final.exists():
                await self._download_full(info, final, done, progress)
            done += info.length_bytes
            progress(done)
        return saved

    async def _download_full(
        self, info: VerifiedFile, final: Path, done_before: int, progress: Callable[[int], None]
    ) -> None:
        part = self._downloads / f"{info.sha256}.part"
        tracker = asyncio.create_task(self._track(part, done_before, progress))
        try:
            await self._link.download_blob(info.sha256, part)
        finally:
            tracker.cancel()
        try:
            verify_file(info, part)
        except EdgefleetError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, final)

    def _try_reuse(self, info: VerifiedFile, source: Path, final: Path) -> None:
        """Copy `source` to `final` if the copy matches the signed target; else no `final`.
        The copy is what gets verified, so a slot changed meanwhile cannot slip through."""
        part = self._downloads / f"{info.sha256}.reused"
        try:
            shutil.copyfile(source, part)
            verify_file(info, part)
        except (EdgefleetError, OSError) as e:
            part.unlink(missing_ok=True)
            log.warning(
                "file on the device not reused; fetching it",
                extra={"artifact": info.path, "source": str(source), "reason": str(e)[:200]},
            )
            return
        os.replace(part, final)
        log.info(
            "reused a verified file already on the device",
            extra={"artifact": info.path, "source": str(source), "bytes": info.length_bytes},
        )

    async def _try_delta(
        self, info: VerifiedFile, base: Path, base_sha256: str, final: Path
    ) -> int:
        """Rebuild `final` from `base` and a delta; 0 and no `final` when that fails."""
        patch = self._downloads / f"{info.sha256}.from-{base_sha256}.delta"
        rebuilt = self._downloads / f"{info.sha256}.rebuilt"
        try:
            for _ in range(DELTA_PENDING_POLLS):
                if await self._link.download_delta(info.sha256, base_sha256, patch):
                    break
                await self._clock.sleep(DELTA_PENDING_WAIT_S)
            else:
                return 0
            await self._helper.apply_delta(base, patch, rebuilt, info.sha256)
            verify_file(info, rebuilt)
            os.replace(rebuilt, final)
            saved = max(0, info.length_bytes - patch.stat().st_size)
            log.info("rebuilt from a delta", extra={"artifact": info.path, "bytes_saved": saved})
            return saved
        except (EdgefleetError, OSError) as e:
            log.info(
                "delta not used; downloading in full",
                extra={"artifact": info.path, "reason": str(e)[:200]},
            )
            return 0
        finally:
            patch.unlink(missing_ok=True)
            rebuilt.unlink(missing_ok=True)

    async def _track(self, part: Path, before: int, progress: Callable[[int], None]) -> None:
        while True:
            progress(before + (part.stat().st_size if part.exists() else 0))
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    def clean(self) -> None:
        for path in self._downloads.iterdir():
            path.unlink(missing_ok=True)
