"""TUF client: how a device decides that a release target is genuine, with python-tuf.

The device keeps a metadata directory under its data dir::

    enrollment_root.json       the root received at enrollment: the trust anchor
    root_history/K.root.json   roots python-tuf has verified since (rotations)
    root.json, timestamp.json, snapshot.json, targets.json   python-tuf's trusted cache

`enrollment_anchor` decides what is kept at enrollment: the root the control plane hands
over, which must be the root pinned out of band (`agent --root-file`) or chain from it when
one is pinned.

`verify_target` runs python-tuf's `Updater` (root rotation, timestamp, snapshot, targets,
with signature thresholds, expiry and rollback checks) and returns the signed facts about
one target (the agent checks downloaded files against them; it runs this module in its
install helper's child process: `agent/release_verification.py`). Metadata is fetched
through a caller-supplied `fetch(url)`, so the agent's authenticated transport carries it;
fetch returns bytes, or an iterable of chunks so that an endless response is cut off at
the size limit before it is in memory. NotFound (or an ApiError with a status) from fetch
is passed to python-tuf as that HTTP status, which is how it learns that no newer root
exists.

Refusals are Unauthenticated with a `tuf_*` code: tuf_unsigned, tuf_expired, tuf_rollback,
tuf_hash_mismatch, tuf_metadata_too_large, tuf_invalid. Fetch failures are Unavailable.
Expiry is judged against the device's clock (python-tuf reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import (
    FetcherInterface,
    TargetFile,
    Updater,
    UpdaterConfig,
)

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import (
    ApiError,
    Conflict,
    EdgefleetError,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from edgefleet.security.metadata_files import ENROLLMENT_ROOT
from edgefleet.security.tuf_metadata import (
    MAX_ROOT_BYTES,
    MAX_SNAPSHOT_BYTES,
    MAX_TARGETS_BYTES,
    MAX_TIMESTAMP_BYTES,
    ReleaseTarget,
    parse_root,
)

MetadataFetch = Callable[[str], bytes | Iterable[bytes]]
DEFAULT_METADATA_BASE_URL = "/v1/tuf/"
MAX_ROOT_ROTATIONS = 32
R = TypeVar("R")


class CallableFetcher(FetcherInterface):
    """A python-tuf fetcher that delegates to `fetch(url)` and caps every response."""

    def __init__(self, fetch: MetadataFetch, *, max_response_bytes: int) -> None:
        self._fetch_fn = fetch
        self._max_response_bytes = max_response_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            result = self._fetch_fn(url)
        except EdgefleetError as e:
            raise _download_error(url, e) from e
        chunks = [result] if isinstance(result, bytes) else result
        return self._capped(url, chunks)

    def _capped(self, url: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in chunks:
                received += len(chunk)
                if received > self._max_response_bytes:
                    raise tuf_errors.DownloadLengthMismatchError(
                        f"{url} is longer than {self._max_response_bytes} bytes"
                    )
                yield chunk
        except EdgefleetError as e:
            raise _download_error(url, e) from e


def _download_error(url: str, error: EdgefleetError) -> tuf_errors.DownloadError:
    if isinstance(error, NotFound):
        return tuf_errors.DownloadHTTPError(f"{url}: {error.message}", 404)
    if isinstance(error, ApiError):
        return tuf_errors.DownloadHTTPError(f"{url}: {error.message}", error.status)
    return tuf_errors.DownloadError(f"{url}: {error.message}")


@dataclass(frozen=True)
class TargetInfo:
    """What signed metadata says about one target file."""

    path: str
    length_bytes: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any]

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    @property
    def release_target(self) -> ReleaseTarget:
        """The release, artifact and requirements this target belongs to."""
        return ReleaseTarget.from_target_file(self.to_target_file())

    def to_target_file(self) -> TargetFile:
        return TargetFile(
            self.length_bytes, dict(self.hashes), self.path, {"custom": dict(self.custom)}
        )

    @classmethod
    def from_target_file(cls, target: TargetFile) -> TargetInfo:
        custom = target.custom if isinstance(target.custom, dict) else {}
        return cls(target.path, target.length, dict(target.hashes), custom)


class TufClient:
    """A device's view of the TUF repository, anchored in the root it got at enrollment."""

    def __init__(
        self,
        metadata_dir: Path,
        fetch: MetadataFetch,
        *,
        metadata_base_url: str = DEFAULT_METADATA_BASE_URL,
    ) -> None:
        self.metadata_dir = metadata_dir
        self._base_url = metadata_base_url
        self._config = UpdaterConfig(
            max_root_rotations=MAX_ROOT_ROTATIONS,
            root_max_length=MAX_ROOT_BYTES,
            timestamp_max_length=MAX_TIMESTAMP_BYTES,
            snapshot_max_length=MAX_SNAPSHOT_BYTES,
            targets_max_length=MAX_TARGETS_BYTES,
        )
        limit = max(MAX_ROOT_BYTES, MAX_TIMESTAMP_BYTES, MAX_SNAPSHOT_BYTES, MAX_TARGETS_BYTES)
        self._fetcher = CallableFetcher(fetch, max_response_bytes=limit)

    @staticmethod
    def enrollment_anchor(
        handed: bytes | None, pinned: bytes | None, rotations: Sequence[bytes] = ()
    ) -> bytes:
        """The root to keep at enrollment, given the root the control plane handed over, the
        root pinned out of band (`agent --root-file`) and the control plane's later roots.

        Without a pinned root, the handed one. With one: the handed root when it is the
        pinned root or chains from it (each next version signed by a threshold of the
        previous root's keys and of its own, as python-tuf checks a rotation), or the pinned
        root itself when the control plane has none yet. Unauthenticated
        `tuf_root_not_pinned` otherwise; InvalidInput when the pinned file is not a root.
        """
        if pinned is None:
            if handed is None:
                raise NotFound("the control plane has no root of trust", code="tuf_no_root")
            return handed
        anchor = parse_root(pinned)
        if handed is None:
            return pinned
        try:
            newest = parse_root(handed)
        except InvalidInput as e:
            raise _not_pinned(f"it handed over no valid root ({e.message})") from None
        _check_root_chain(anchor, newest, rotations)
        return handed

    @staticmethod
    def store_enrollment_root(metadata_dir: Path, root: bytes, *, replace: bool = False) -> None:
        """Keep the root received at enrollment as the trust anchor.

        A different anchor is refused unless `replace` (a deliberate re-enrollment).
        """
        parse_root(root)
        path = metadata_dir / ENROLLMENT_ROOT
        if path.exists() and path.read_bytes() != root and not replace:
            raise Conflict(
                "this device already trusts another TUF root; re-enroll to replace it",
                code="tuf_root_exists",
            )
        write_atomically(path, root)

    def verify_target(self, target_path: str) -> TargetInfo:
        """Refresh metadata and return the signed facts of one target; NotFound if unlisted."""
        return self.verify_targets([target_path])[0]

    def verify_targets(self, target_paths: Sequence[str]) -> list[TargetInfo]:
        """Refresh metadata once and return the signed facts of each target, in order."""
        updater = self._updater()
        infos = []
        for path in target_paths:
            target = _translated(partial(updater.get_targetinfo, path))
            if target is None:
                raise NotFound(f"no signed target {path}", code="tuf_target_not_found")
            infos.append(TargetInfo.from_target_file(target))
        return infos

    def trusted_root_version(self) -> int:
        """The version of the newest root this device has verified."""
        updater = self._updater()
        _translated(updater.refresh)
        return self._trusted_root_version_on_disk()

    def _trusted_root_version_on_disk(self) -> int:
        versions = [
            int(p.name.split(".")[0]) for p in (self.metadata_dir / "root_history").glob("*.json")
        ]
        return max(versions, default=0)

    def _updater(self) -> Updater:
        try:
            anchor = (self.metadata_dir / ENROLLMENT_ROOT).read_bytes()
        except FileNotFoundError:
            raise NotFound(
                "no trusted TUF root: the device must enroll first", code="tuf_no_root"
            ) from None
        # A fresh Updater per check: python-tuf refreshes once per Updater, and rebuilding
        # from the enrollment root re-verifies every cached root rotation on the way.
        return _translated(
            lambda: Updater(
                str(self.metadata_dir),
                self._base_url,
                fetcher=self._fetcher,
                config=self._config,
                bootstrap=anchor,
            )
        )


def _check_root_chain(
    anchor: Metadata[Root], newest: Metadata[Root], rotations: Sequence[bytes]
) -> None:
    """Unauthenticated unless `newest` is `anchor` or chains from it through `rotations`."""
    pinned_version, newest_version = anchor.signed.version, newest.signed.version
    if newest_version < pinned_version:
        raise _not_pinned(f"its root v{newest_version} is older than the pinned "
                          f"v{pinned_version}")  # fmt: skip
    if newest_version - pinned_version > MAX_ROOT_ROTATIONS:
        raise _not_pinned(f"its root v{newest_version} is more than {MAX_ROOT_ROTATIONS} "
                          f"rotations after the pinned v{pinned_version}")  # fmt: skip
    by_version: dict[int, Metadata[Root]] = {newest_version: newest}
    for raw in rotations:
        try:
            root = parse_root(raw)
        except InvalidInput:
            continue  # a version the chain needs is then missing, said below
        by_version.setdefault(root.signed.version, root)
    trusted = anchor
    for version in range(pinned_version + 1, newest_version + 1):
        following = by_version.get(version)
        if following is None:
            raise _not_pinned(f"it did not hand over root v{version}, between the pinned "
                              f"v{pinned_version} and its v{newest_version}")  # fmt: skip
        result = following.signed.get_root_verification_result(
            trusted.signed, following.signed_bytes, following.signatures
        )
        if not result.verified:
            raise _not_pinned(
                f"its root v{version} is signed by {len(result.first.signed)}/"
                f"{result.first.threshold} keys of root v{version - 1} and "
                f"{len(result.second.signed)}/{result.second.threshold} of its own"
            )
        trusted = following
    if trusted.signed_bytes != newest.signed_bytes:  # the same version, other content
        raise _not_pinned(f"its root v{newest_version} is not the pinned one")


def _not_pinned(reason: str) -> Unauthenticated:
    return Unauthenticated(
        f"the control plane's TUF root does not chain from the pinned root (--root-file): {reason}",
        code="tuf_root_not_pinned",
    )


def _translated(call: Callable[[], R]) -> R:
    """Run a python-tuf call, turning its errors into edgefleet's."""
    try:
        return call()
    except tuf_errors.ExpiredMetadataError as e:
        raise Unauthenticated(f"TUF metadata expired: {e}", code="tuf_expired") from None
    except tuf_errors.BadVersionNumberError as e:
        raise Unauthenticated(
            f"TUF metadata version went backwards (rollback refused): {e}", code="tuf_rollback"
        ) from None
    except tuf_errors.UnsignedMetadataError as e:
        raise Unauthenticated(
            f"TUF metadata signatures refused: {e}", code="tuf_unsigned"
        ) from None
    except tuf_errors.LengthOrHashMismatchError as e:
        raise Unauthenticated(
            f"TUF metadata does not match its recorded hash: {e}", code="tuf_hash_mismatch"
        ) from None
    except tuf_errors.RepositoryError as e:
        raise Unauthenticated(f"TUF metadata refused: {e}", code="tuf_invalid") from None
    except tuf_errors.DownloadLengthMismatchError as e:
        raise Unauthenticated(
            f"TUF metadata over the size limit refused: {e}", code="tuf_metadata_too_large"
        ) from None
    except tuf_errors.DownloadError as e:
        cause = e.__cause__ or e
        raise Unavailable(
            f"TUF metadata could not be fetched: {cause}", code="tuf_fetch_failed"
        ) from None
