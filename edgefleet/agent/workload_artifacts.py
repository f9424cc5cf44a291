"""The releases a device's workload replicas run, fetched and verified the way the installer
does it (`release_verification`): every file looked up in signed TUF metadata, compatibility checked
against this device, downloaded resumably through `Delivery` and verified against the
signed length and hashes. A migration's target does this before it starts (pre-staging).

    DATA_DIR/workloads/releases/NAME@VERSION/   the release's files, and `release.json`
    DATA_DIR/workloads/downloads/               blobs being downloaded (`SHA.part`)
    DATA_DIR/workloads/tuf/                     python-tuf's cache, anchored in the root
                                                pinned at enrollment (`DATA_DIR/tuf/`); a
                                                cache of its own, so the installer and this
                                                never write the same metadata files at once

A release directory is complete once `release.json` is written (last, atomically); a
release already there is used as is. Metadata checks run in the install helper, as the
installer's do (`install_helper.py`), and so does reading the release's service manifest,
once, into `release.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefleet.agent.delivery import Delivery
from edgefleet.agent.install_helper import ChildProcessHelper, InstallHelper
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.release_verification import ReleaseRefused, verified_targets
from edgefleet.atomicfile import write_json_atomically
from edgefleet.clock import Clock
from edgefleet.errors import InvalidInput

log = logging.getLogger(__name__)

RELEASE_FILE = "release.json"


@dataclass(frozen=True)
class FetchedRelease:
    name: str
    version: str
    directory: Path
    files: Mapping[str, str]  # artifact name -> file name
    kinds: Mapping[str, str]  # artifact name -> kind
    service: Mapping[str, Any] | None = None  # its service manifest, read once when fetched

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
        helper: InstallHelper | None = None,
    ) -> None:
        """`helper` runs metadata checks: a child process per check unless given (the
        simulator passes an `InProcessHelper`)."""
        self._root = root / "releases"
        self._root.mkdir(parents=True, exist_ok=True)
        self._enrollment_tuf_dir = enrollment_tuf_dir
        self._tuf_dir = root / "tuf"
        self._tuf_dir.mkdir(parents=True, exist_ok=True)
        self._helper = helper or ChildProcessHelper()
        self._delivery = Delivery(root / "downloads", link, clock, self._helper)
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
        return FetchedRelease(name, version, directory, raw["files"], raw["kinds"],
                              raw.get("service"))  # fmt: skip

    async def ensure(self, release: Mapping[str, Any]) -> FetchedRelease:
        """The release on disk, fetched and verified if it is not there yet. Raises
        ReleaseRefused (permanent for this release) or Unavailable (retry later)."""
        name, version = str(release["name"]), str(release["version"])
        found = self.find(name, version)
        if found is not None and not _lacks_manifest(found):
            return found
        async with self._lock:
            found = self.find(name, version)
            if found is not None and _lacks_manifest(found):
                # Fetched by an agent that did not keep the manifest in release.json.
                found = await self._record_manifest(found)
            if found is not None:
                return found
            return await self._fetch(name, version, [str(t["path"]) for t in release["targets"]])

    async def _fetch(self, name: str, version: str, paths: list[str]) -> FetchedRelease:
        infos = await verified_targets(
            self._helper,
            self._tuf_dir,
            self._link,
            name,
            version,
            paths,
            self._inventory(),
            self._labels(),
            pinned_in=self._enrollment_tuf_dir,
        )
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
            shutil.copyfile(self._delivery.path(info.sha256), directory / info.file_name)
            files[info.artifact_name] = info.file_name
            kinds[info.artifact_name] = info.artifact_kind
        for info in infos:
            with_path = self._delivery.path(info.sha256)
            if with_path.exists():
                os.unlink(with_path)
        fetched = FetchedRelease(name, version, directory, files, kinds)
        service = await self._read_manifest(fetched)
        write_json_atomically(directory / RELEASE_FILE, {
            "name": name, "version": version, "files": files, "kinds": kinds,
            "sha256": {i.artifact_name: i.sha256 for i in infos}, "service": service,
        })  # fmt: skip
        log.info("workload release fetched", extra={"release": f"{name}@{version}"})
        return replace(fetched, service=service)

    async def _read_manifest(self, release: FetchedRelease) -> dict[str, Any] | None:
        """The release's service manifest, validated (by the install helper: PyYAML stays
        out of the agent); None without one. ReleaseRefused when it is refused."""
        for name, kind in sorted(release.kinds.items()):
            if kind == "service":
                try:
                    return await self._helper.read_manifest(release.path_of(name))
                except InvalidInput as e:
                    raise ReleaseRefused(f"service manifest refused: {e.message}") from None
        return None

    async def _record_manifest(self, release: FetchedRelease) -> FetchedRelease:
        path = release.directory / RELEASE_FILE
        raw = json.loads(path.read_text())
        raw["service"] = await self._read_manifest(release)
        write_json_atomically(path, raw)
        return replace(release, service=raw["service"])


def _lacks_manifest(release: FetchedRelease) -> bool:
    return release.service is None and "service" in release.kinds.values()
