"""The releases a device's workload replicas run, fetched and verified the way the installer
does it: every file looked up in signed TUF metadata (python-tuf), compatibility checked
against this device, downloaded resumably through `Delivery` and verified against the
signed length and hashes. A migration's target does this before it starts (pre-staging).

    DATA_DIR/workloads/releases/NAME@VERSION/   the release's files, and `release.json`
    DATA_DIR/workloads/downloads/               blobs being downloaded (`SHA.part`)
    DATA_DIR/workloads/tuf/                     python-tuf's cache, anchored in the root
                                                pinned at enrollment (`DATA_DIR/tuf/`); a
                                                cache of its own, so the installer and this
                                                never write the same metadata files at once

A release directory is complete once `release.json` is written (last, atomically); a
release already there is used as is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.agent.delivery import Delivery
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.atomicfile import write_json_atomically
from edgefleet.clock import Clock
from edgefleet.core.compat import evaluate_compatibility, parse_requirements
from edgefleet.errors import EdgefleetError, InvalidInput, Unavailable

log = logging.getLogger(__name__)

RELEASE_FILE = "release.json"


class ReleaseRefused(EdgefleetError):
    """This device will not run the release (metadata, compatibility, hashes); the reason is
    reported with the replica."""

    code = "release_refused"


@dataclass(frozen=True)
class FetchedRelease:
    name: str
    version: str
    directory: Path
    files: Mapping[str, str]  # artifact name -> file name
    kinds: Mapping[str, str]  # artifact name -> kind

    def path_of(self, artifact: str) -> Path:
        return self.directory / self.files[artifact]


class ReleaseCache:
    def __init__(
        self,
        root: Path,
        enrollment_tuf_dir: Path,
        link: ControlPlaneLink,
        clock: Clock,
        inventory: Callable[[], Mapping[str, Any]],
        labels: Callable[[], Mapping[str, str]],
    ) -> None:
        self._root = root / "releases"
        self._root.mkdir(parents=True, exist_ok=True)
        self._enrollment_tuf_dir = enrollment_tuf_dir
        self._tuf_dir = root / "tuf"
        self._tuf_dir.mkdir(parents=True, exist_ok=True)
        self._delivery = Delivery(root / "downloads", link, clock)
        self._link = link
        self._inventory = inventory
        self._labels = labels
        self._lock = asyncio.Lock()

    def find(self, name: str, version: str) -> FetchedRelease | None:
        """The release if it is complete on disk."""
        directory = self._root / f"{name}@{version}"
        try:
            raw = json.loads((directory / RELEASE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return FetchedRelease(name, version, directory, raw["files"], raw["kinds"])

    async def ensure(self, release: Mapping[str, Any]) -> FetchedRelease:
        """The release on disk, fetched and verified if it is not there yet. Raises
        ReleaseRefused (permanent for this release) or Unavailable (retry later)."""
        name, version = str(release["name"]), str(release["version"])
        found = self.find(name, version)
        if found is not None:
            return found
        async with self._lock:
            found = self.find(name, version)
            if found is not None:
                return found
            return await self._fetch(name, version, [str(t["path"]) for t in release["targets"]])

    async def _fetch(self, name: str, version: str, paths: list[str]) -> FetchedRelease:
        infos = await self._verified(name, version, paths)
        try:
            await self._delivery.fetch(infos, {}, lambda _done: None)
        except InvalidInput as e:
            raise ReleaseRefused(f"download refused: {e.message}") from None
        directory = self._root / f"{name}@{version}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        files: dict[str, str] = {}
        kinds: dict[str, str] = {}
        for info in infos:
            target = info.release_target
            shutil.copyfile(self._delivery.path(info.sha256), directory / target.file_name)
            files[target.artifact_name] = target.file_name
            kinds[target.artifact_name] = target.artifact_kind
        for info in infos:
            with_path = self._delivery.path(info.sha256)
            if with_path.exists():
                os.unlink(with_path)
        write_json_atomically(directory / RELEASE_FILE, {
            "name": name, "version": version, "files": files, "kinds": kinds,
            "sha256": {i.release_target.artifact_name: i.sha256 for i in infos},
        })  # fmt: skip
        log.info("workload release fetched", extra={"release": f"{name}@{version}"})
        return FetchedRelease(name, version, directory, files, kinds)

    async def _verified(self, name: str, version: str, paths: list[str]) -> list[Any]:
        # python-tuf loads with the first release fetched, not in an idle agent.
        from edgefleet.security.tuf_client import ENROLLMENT_ROOT, TufClient

        if not (self._tuf_dir / ENROLLMENT_ROOT).exists():
            anchor = self._enrollment_tuf_dir / ENROLLMENT_ROOT
            if anchor.exists():
                root = anchor.read_bytes()
            else:
                root = await self._link.fetch("/v1/tuf/1.root.json")
                log.warning("pinned the fleet's first TUF root on first use (trust on first "
                            "use)")
            TufClient.store_enrollment_root(self._tuf_dir, root)
        loop = asyncio.get_running_loop()

        def fetch(url: str) -> bytes:
            return asyncio.run_coroutine_threadsafe(self._link.fetch(url), loop).result(120)

        client = TufClient(self._tuf_dir, fetch)
        try:
            infos = await asyncio.to_thread(client.verify_targets, paths)
        except Unavailable:
            raise
        except EdgefleetError as e:
            raise ReleaseRefused(f"release metadata refused: {e.message}") from None
        for info in infos:
            target = info.release_target
            if (target.release_name, target.release_version) != (name, version):
                raise ReleaseRefused(f"signed target {info.path} belongs to another release")
            verdict = evaluate_compatibility(
                parse_requirements(list(target.requirements)), self._inventory(), self._labels()
            )
            if not verdict.compatible:
                raise ReleaseRefused(f"incompatible: {target.artifact_name}: {verdict.reason}")
        return infos
