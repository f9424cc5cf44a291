"""Checking a release before any of its files is fetched, the same way for the installer and
for the releases workload replicas run: every file looked up in signed TUF metadata
(python-tuf, anchored in the root pinned at enrollment), each signed target belonging to the
named release, and each artifact's requirements met by this device."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.agent.link import ControlPlaneLink
from edgefleet.core.compat import evaluate_compatibility, parse_requirements
from edgefleet.errors import EdgefleetError, Unavailable

if TYPE_CHECKING:
    from edgefleet.security.tuf_client import TargetInfo

log = logging.getLogger(__name__)

METADATA_FETCH_TIMEOUT_S = 120


class ReleaseRefused(EdgefleetError):
    """This device will not take the release (metadata, compatibility, hashes); the reason
    is reported."""

    code = "release_refused"


async def verified_targets(
    tuf_dir: Path,
    link: ControlPlaneLink,
    name: str,
    version: str,
    paths: Sequence[str],
    inventory: Mapping[str, Any],
    labels: Mapping[str, str],
    pinned_in: Path | None = None,
) -> list[TargetInfo]:
    """Signed facts for every file of `name@version`, checked against this device. `tuf_dir`
    is python-tuf's cache; its trust anchor is the root pinned at enrollment in `tuf_dir`,
    or else in `pinned_in` (another cache's directory), or else the fleet's first root,
    trusted on first use. Raises ReleaseRefused, or Unavailable when the control plane
    cannot be reached."""
    # python-tuf loads with the first release checked, not in an idle agent.
    from edgefleet.security.tuf_client import ENROLLMENT_ROOT, TufClient

    if not (tuf_dir / ENROLLMENT_ROOT).exists():
        pinned = None if pinned_in is None else pinned_in / ENROLLMENT_ROOT
        if pinned is not None and pinned.exists():
            root = pinned.read_bytes()
        else:
            # Enrolled before the fleet had a root of trust: trust on first use, said loudly.
            root = await link.fetch("/v1/tuf/1.root.json")
            log.warning("pinned the fleet's first TUF root on first use (trust on first use)")
        TufClient.store_enrollment_root(tuf_dir, root)
    loop = asyncio.get_running_loop()

    def fetch(url: str) -> bytes:
        future = asyncio.run_coroutine_threadsafe(link.fetch(url), loop)
        return future.result(METADATA_FETCH_TIMEOUT_S)

    client = TufClient(tuf_dir, fetch)
    try:
        infos = await asyncio.to_thread(client.verify_targets, list(paths))
    except Unavailable:
        raise
    except EdgefleetError as e:
        raise ReleaseRefused(f"release metadata refused: {e.message}") from None
    for info in infos:
        target = info.release_target
        if (target.release_name, target.release_version) != (name, version):
            raise ReleaseRefused(f"signed target {info.path} belongs to another release")
        verdict = evaluate_compatibility(
            parse_requirements(list(target.requirements)), inventory, labels
        )
        if not verdict.compatible:
            raise ReleaseRefused(f"incompatible: {target.artifact_name}: {verdict.reason}")
    return infos


