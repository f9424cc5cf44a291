"""`edgefleet keys generate` and `edgefleet trust ...`: the operators' side of TUF.

Root and targets keys live in files on operators' machines (mode 0600, a `.pub.json`
beside each). The server only ever sees public keys and signed metadata.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from edgefleet.atomicfile import write_atomically
from edgefleet.cli.output import Column, Output, console, emit_document, emit_object
from edgefleet.cli.signing import (
    FILE_HELP,
    ROOT_FILE_HELP,
    local_files,
    release_files,
    show_review,
    trust_store,
    verified_published,
)
from edgefleet.core.durations import parse_duration
from edgefleet.core.updates.release import parse_ref
from edgefleet.errors import InvalidInput
from edgefleet.security.signing_review import MAX_LIFETIME, review_root, review_targets
from edgefleet.security.tuf_keys import (
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_key_from_dict,
    public_key_path,
    save_signing_key,
)
from edgefleet.security.tuf_metadata import (
    RoleKeys,
    build_next_root,
    build_root,
    parse_metadata,
    parse_targets,
    sign_metadata,
    summarize_metadata,
)

keys_app = typer.Typer(help="Signing keys for TUF roles (kept by operators).", no_args_is_help=True)
trust_app = typer.Typer(
    help="The TUF root of trust: set up, rotate, inspect.", no_args_is_help=True
)


class KeyRole(StrEnum):
    ROOT = "root"
    TARGETS = "targets"


@keys_app.command("generate")
def generate(
    role: KeyRole = typer.Option(..., help="root or targets (only a label on the file)"),
    out: Path = typer.Option(..., "-o", "--out", help="Private key file to create (0600)"),
) -> None:
    """Create an Ed25519 signing key; writes OUT and OUT.pub.json."""
    if out.exists():
        raise InvalidInput(f"{out} exists; refusing to overwrite a key")
    signer = generate_signing_key()
    public = save_signing_key(signer, out)
    console.print(
        f"{role} key {signer.public_key.keyid[:16]}… written to {out} (public part: {public})"
    )


def _public_keys(paths: list[Path]) -> tuple[Any, ...]:
    """Public keys from key files: a private key file's .pub.json, or a .pub.json itself."""
    keys = []
    for path in paths:
        pub = path if path.name.endswith(".pub.json") else public_key_path(path)
        keys.append(load_public_key(pub))
    return tuple(keys)


def _expiry(text: str) -> datetime:
    return datetime.now(UTC) + parse_duration(text)


@trust_app.command("init")
def init(
    ctx: typer.Context,
    root_key: list[Path] = typer.Option(..., help="Root signing key file, repeatable"),
    root_threshold: int = typer.Option(1, help="Root signatures required"),
    targets_key: list[Path] = typer.Option(
        ..., help="Targets key: a private key file or a .pub.json (repeatable)"
    ),
    targets_threshold: int = typer.Option(1, help="Targets signatures required per release"),
    expires: str = typer.Option("365d", help="Root lifetime"),
) -> None:
    """Create the first root (signed here with the root keys) and install it on the server.
    Devices enrolled from then on pin it."""
    signers = [load_signing_key(k) for k in root_key]
    with ctx.obj.client() as client:
        online = client.online_keys()
        root = build_root(
            root=RoleKeys(tuple(s.public_key for s in signers), root_threshold),
            targets=RoleKeys(_public_keys(targets_key), targets_threshold),
            snapshot=RoleKeys((public_key_from_dict(online["snapshot"]),)),
            timestamp=RoleKeys((public_key_from_dict(online["timestamp"]),)),
            expires=_expiry(expires),
        )
        for signer in signers:
            root = sign_metadata(root, signer)
        result = client.initialize_trust(json.loads(root))
        store = trust_store(ctx, client)
        store.start(root)
    console.print(
        f"trust initialized: root v{result['root_version']}; kept as this "
        f"machine's trusted root in {store.root_path} (signers elsewhere pass a "
        "copy with --root-file)"
    )


@trust_app.command("rotate")
def rotate(
    ctx: typer.Context,
    root_key: list[Path] = typer.Option(..., help="Current root signing key(s)"),
    new_root_key: list[Path] = typer.Option(
        [], help="New root signing key(s); omit to keep the root keys"
    ),
    new_root_threshold: int = typer.Option(None, help="New root threshold"),
    new_targets_key: list[Path] = typer.Option(
        [], help="New targets key(s) (private, to re-sign current targets); omit to keep"
    ),
    new_targets_threshold: int = typer.Option(None, help="New targets threshold"),
    expires: str = typer.Option("365d", help="Lifetime of the new root"),
    root_file: Path = typer.Option(None, help=ROOT_FILE_HELP),
) -> None:
    """Rotate root and/or targets keys: the next root is signed by the current and the new
    root keys; when targets keys change, the current targets are re-signed with the new
    ones in the same step, so devices never see a gap. The current root and targets are
    the ones verified from your trusted root, never the server's word."""
    old = [load_signing_key(k) for k in root_key]
    new = [load_signing_key(k) for k in new_root_key]
    targets_signers = [load_signing_key(k) for k in new_targets_key]
    with ctx.obj.client() as client:
        status = client.trust_status()
        if not status["initialized"]:
            raise InvalidInput("trust is not initialized yet: run `edgefleet trust init`")
        published = verified_published(ctx, client, root_file)
        root_role = None
        if new:
            threshold = new_root_threshold or len(new)
            root_role = RoleKeys(tuple(s.public_key for s in new), threshold)
        targets_role = None
        if targets_signers:
            threshold = new_targets_threshold or len(targets_signers)
            targets_role = RoleKeys(tuple(s.public_key for s in targets_signers), threshold)
        root = build_next_root(
            published.root_bytes, expires=_expiry(expires), root=root_role, targets=targets_role
        )
        for signer in [*old, *new]:
            root = sign_metadata(root, signer)
        targets = None
        if targets_role is not None and published.targets_bytes is not None:
            targets = _resigned(published.targets_bytes, targets_signers)
        result = client.rotate_root(json.loads(root), json.loads(targets) if targets else None)
        change = result.get("pending_change")
        if change is not None:  # a policy wants a second admin (four-eyes)
            console.print(f"{change['summary']}: waits for a second admin "
                          f"(edgefleet changes approve {change['id']})")  # fmt: skip
            return
        trust_store(ctx, client).keep_root(root)
    console.print(f"root rotated to v{result['root_version']}")


def _resigned(targets: bytes, signers: list[Any]) -> bytes:
    """The same targets, version + 1, signed only by the new keys."""
    md = parse_targets(targets)
    md.signed.version += 1
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return bytes(md.to_bytes())


@trust_app.command("sign")
def sign_file(
    ctx: typer.Context,
    metadata_file: Path = typer.Argument(..., help="Root or targets metadata (JSON)"),
    key: list[Path] = typer.Option(..., help="Signing key file, repeatable"),
    release: str = typer.Option(
        None, help="NAME@VERSION: the release that targets metadata adds (required for targets)"
    ),
    root_file: Path = typer.Option(None, help=ROOT_FILE_HELP),
    file: list[Path] = typer.Option([], help=FILE_HELP),
) -> None:
    """Add your signature(s) to a metadata file in place (for thresholds above 1), once it
    checks out against what the server publishes, verified from your trusted root: targets
    must be the published ones plus exactly the files of --release, the next version,
    expiring within 5 years; a root must be the next version of the trusted root (its
    changes of keys, thresholds and expiry are shown). Anything else is refused and the
    file is left as it was."""
    metadata = _read_metadata(metadata_file)
    md = parse_metadata(metadata)
    mine = local_files(file)
    with ctx.obj.client() as client:
        published = verified_published(ctx, client, root_file)
        now = datetime.now(UTC)
        if md.signed.type == "root":
            lines = review_root(
                md, published.root.signed, now=now, latest_expiry=now + MAX_LIFETIME
            ).lines()
        elif md.signed.type == "targets":
            if release is None:
                raise InvalidInput(
                    "targets metadata: name the release it adds with --release NAME@VERSION"
                )
            expected = release_files(client, parse_ref(release, "release"))
            lines = review_targets(
                md,
                None if published.targets is None else published.targets.signed,
                expected,
                now=now,
                expires_within=(now, now + MAX_LIFETIME),
                local_files=mine,
            ).lines()
        else:
            raise InvalidInput(
                f"{md.signed.type} metadata is signed by the server, not by operators",
                code="invalid_metadata",
            )
    show_review(lines)
    for path in key:
        metadata = sign_metadata(metadata, load_signing_key(path))
    write_atomically(metadata_file, metadata)
    summary = summarize_metadata(metadata)
    console.print(f"{summary.role} v{summary.version}: signed by {len(summary.signed_by)} key(s)")


def _read_metadata(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None


STATUS_FIELDS = [
    Column("initialized", lambda s: "yes" if s["initialized"] else "no"),
    Column("root", lambda s: f"v{s['root_version']}, expires {s['root_expires'][:10]}"),
    Column(
        "roles",
        lambda s: "; ".join(
            f"{name} {len(r['keyids'])} key(s), threshold {r['threshold']}"
            for name, r in s["roles"].items()
        ),
    ),
    Column(
        "targets",
        lambda s: (
            f"v{s['targets_version']}, {s['targets']} file(s), "
            f"expires {(s['targets_expires'] or '-')[:10]}"
            if s["targets_version"]
            else "none"
        ),
    ),
]


@trust_app.command("status")
def status(
    ctx: typer.Context, output: Output = typer.Option(Output.TABLE, "-o", "--output")
) -> None:
    """Show the root of trust: versions, roles, thresholds, expiry."""
    with ctx.obj.client() as client:
        result = client.trust_status()
    if output.is_document:
        emit_document(result, output)
    elif not result["initialized"]:
        console.print("trust: not initialized (edgefleet trust init)")
    else:
        emit_object(result, output, STATUS_FIELDS)
