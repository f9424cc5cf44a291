"""The agent's check of a desired-state document before it acts on it.

The keys come from the newest root this device trusts (python-tuf's verified `root.json`
in the installer's TUF directory, else the root pinned at enrollment). A document signed
by a key that root does not name may follow an online-key rotation the device has not
seen yet: the install helper then refreshes the TUF metadata (root rotations verified by
python-tuf against the pinned root), at most once a minute, and the check runs again.

A device that trusts no root yet (it enrolled before the fleet had one) takes unsigned
documents: it cannot verify them, and without a root it installs no release and runs no
workload either (both are verified against signed targets metadata). Once it has a root,
an unsigned document is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefleet.agent.install_helper import InstallHelper
from edgefleet.agent.link import SignedDocument
from edgefleet.agent.release_verification import MetadataFetch, ReleaseRefused, VerifyRequest
from edgefleet.clock import Clock
from edgefleet.errors import ApiError, Unavailable
from edgefleet.security.desired_signature import (
    DesiredStateKeys,
    DesiredStateRefused,
    read_document,
    verify_desired,
)
from edgefleet.security.metadata_files import ENROLLMENT_ROOT, TRUSTED_ROOT

log = logging.getLogger(__name__)

TRUST_REFRESH_INTERVAL_S = 60.0


class DesiredStateCheck:
    def __init__(
        self,
        tuf_dir: Path,
        helper: InstallHelper,
        fetch: MetadataFetch,
        clock: Clock,
        device_id: Callable[[], str],
    ) -> None:
        self._tuf_dir = tuf_dir
        self._helper = helper
        self._fetch = fetch
        self._clock = clock
        self._device_id = device_id
        self._refreshed_at_s: float | None = None

    def trusted_keys(self) -> DesiredStateKeys | None:
        """The keys a document needs, from the newest trusted root; None without one."""
        for name in (TRUSTED_ROOT, ENROLLMENT_ROOT):
            try:
                return DesiredStateKeys.from_root((self._tuf_dir / name).read_bytes())
            except FileNotFoundError:
                continue
        return None

    async def verified(self, document: SignedDocument, applied_generation: int) -> dict[str, Any]:
        """The document to act on; DesiredStateRefused when it must not be."""
        keys = self.trusted_keys()
        if keys is None and document.signature is None:
            parsed = read_document(document.body, self._device_id(), applied_generation)
            log.warning("desired state taken unsigned: this device trusts no root yet",
                        extra={"generation": parsed.get("generation")})  # fmt: skip
            return parsed
        if keys is not None:
            try:
                return self._verify(document, keys, applied_generation)
            except DesiredStateRefused as e:
                if e.code != "desired_unknown_key":
                    raise
        if not await self._refresh_trust():
            raise DesiredStateRefused(
                "the desired state is signed by a key this device does not trust, and the "
                "fleet's root could not be refreshed now", code="desired_unknown_key")  # fmt: skip
        keys = self.trusted_keys()
        if keys is None:
            raise DesiredStateRefused("no trusted root after refreshing the fleet's metadata")
        return self._verify(document, keys, applied_generation)

    def _verify(
        self, document: SignedDocument, keys: DesiredStateKeys, applied_generation: int
    ) -> dict[str, Any]:
        return verify_desired(document.body, document.signature, keys, self._device_id(),
                              applied_generation)  # fmt: skip

    async def _refresh_trust(self) -> bool:
        """Refresh TUF metadata through the helper (root rotations); False when not tried
        (too soon after the last time) or when it failed."""
        now_s = self._clock.monotonic()
        if self._refreshed_at_s is not None and (
            now_s - self._refreshed_at_s < TRUST_REFRESH_INTERVAL_S
        ):
            return False
        self._refreshed_at_s = now_s
        request = VerifyRequest(self._tuf_dir, "", "", ())  # no targets: the refresh alone
        try:
            await self._helper.verify_release(request, self._fetch)
        except (ReleaseRefused, Unavailable, ApiError) as e:
            log.warning("could not refresh the fleet's root of trust",
                        extra={"error": e.message})  # fmt: skip
            return False
        return True
