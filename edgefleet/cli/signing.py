"""What `releases sign`, `trust sign` and `trust rotate` do before they sign: find out what
the control plane really publishes, starting from the root this machine trusts, and hold
what is about to be signed against it (security/signing_review.py).

The trusted root comes from `--root-file`, else from this machine's trust store for the
server (`trust/HOST_PORT/root.json` beside the config file), which `trust init` and
`trust rotate` fill and every check moves forward.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from edgefleet.artifacts.delta_format import sha256_of_file
from edgefleet.cli.output import Output, console, error_console
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import Ref
from edgefleet.errors import ApiError, InvalidInput
from edgefleet.security.signing_review import LocalFile
from edgefleet.security.trust_store import PublishedMetadata, TrustStore, verify_published
from edgefleet.security.tuf_metadata import ReleaseTarget

ROOT_FILE_HELP = (
    "A root you trust (JSON) to check the server's metadata from; by "
    "default the one this machine keeps for the server (trust init)"
)
FILE_HELP = (
    "A file of the release as you have it, compared by name with what gets signed (repeatable)"
)


def trust_store(ctx: typer.Context, client: FleetClient) -> TrustStore:
    return TrustStore.for_server(ctx.obj.config_path.parent, client.server_url)


def verified_published(
    ctx: typer.Context, client: FleetClient, root_file: Path | None
) -> PublishedMetadata:
    """The server's published root and targets, verified from the trusted root; the trust
    store keeps what verified."""
    store = trust_store(ctx, client)
    anchor = _read(root_file) if root_file is not None else store.root()
    if anchor is None:
        raise InvalidInput(
            f"no trusted root for {client.server_url}: pass --root-file with a root you "
            f"trust (`trust init` keeps one in {store.root_path})",
            code="no_trusted_root",
        )

    def fetch(name: str) -> bytes | None:
        try:
            data: bytes = client.tuf_metadata(name)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return data

    published = verify_published(
        anchor,
        fetch,
        now=datetime.now(UTC),
        min_root_version=store.root_version(),
        min_targets_version=store.targets_version(),
    )
    store.remember(published)
    return published


def release_files(client: FleetClient, ref: Ref) -> list[ReleaseTarget]:
    """The targets a release should add, from its files as the server lists them."""
    release = client.get_release(ref.name, ref.version)
    try:
        return [
            ReleaseTarget(
                release_name=ref.name,
                release_version=ref.version,
                artifact_name=f["name"],
                artifact_version=f["version"],
                artifact_kind=f["kind"],
                file_name=f["file_name"],
                length_bytes=f["size_bytes"],
                sha256=f["sha256"],
                requirements=tuple(f["requires"]),
            )
            for f in release["files"]
        ]
    except (KeyError, TypeError) as e:
        raise InvalidInput(
            f"the server's description of release {ref} lacks {e}", code="bad_response"
        ) from None


def local_files(paths: list[Path]) -> list[LocalFile]:
    files = []
    for path in paths:
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
        files.append(LocalFile(path.name, path.stat().st_size, sha256_of_file(path)))
    return files


def show_review(lines: list[str], output: Output = Output.TABLE) -> None:
    """The change about to be signed; on stderr when stdout carries JSON."""
    target = error_console if output.is_document else console
    for line in lines:
        target.print(line, highlight=False, markup=False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
