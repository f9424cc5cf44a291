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

from edgefleet.cli.output import Column, Output, console, emit_object, print_json
from edgefleet.core.durations import parse_duration
from edgefleet.errors import InvalidInput
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
    parse_targets,
    sign_metadata,
    summarize_metadata,
)

keys_app = typer.Typer(help="Signing keys for TUF roles (kept by operators).",
                       no_args_is_help=True)
trust_app = typer.Typer(help="The TUF root of trust: set up, rotate, inspect.",
                        no_args_is_help=True)


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
    console.print(f"{role} key {signer.public_key.keyid[:16]}… written to {out} "
                  f"(public part: {public})")


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
    console.print(f"trust initialized: root v{result['root_version']}")


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
) -> None:
    """Rotate root and/or targets keys: the next root is signed by the current and the new
    root keys; when targets keys change, the current targets are re-signed with the new
    ones in the same step, so devices never see a gap."""
    old = [load_signing_key(k) for k in root_key]
    new = [load_signing_key(k) for k in new_root_key]
    targets_signers = [load_signing_key(k) for k in new_targets_key]
    with ctx.obj.client() as client:
        status = client.trust_status()
        if not status["initialized"]:
            raise InvalidInput("trust is not initialized yet: run `edgefleet trust init`")
        current = client.tuf_metadata(f"{status['root_version']}.root.json")
        root_role = None
        if new:
            threshold = new_root_threshold or len(new)
            root_role = RoleKeys(tuple(s.public_key for s in new), threshold)
        targets_role = None
        if targets_signers:
            threshold = new_targets_threshold or len(targets_signers)
            targets_role = RoleKeys(tuple(s.public_key for s in targets_signers), threshold)
        root = build_next_root(current, expires=_expiry(expires), root=root_role,
                               targets=targets_role)
        for signer in [*old, *new]:
            root = sign_metadata(root, signer)
        targets = None
        if targets_role is not None and status.get("targets_version"):
            targets_raw = client.tuf_metadata(f"{status['targets_version']}.targets.json")
            targets = _resigned(targets_raw, targets_signers)
        result = client.rotate_root(json.loads(root), json.loads(targets) if targets else None)
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
    metadata_file: Path = typer.Argument(..., help="Root or targets metadata (JSON)"),
    key: list[Path] = typer.Option(..., help="Signing key file, repeatable"),
) -> None:
    """Add your signature(s) to a metadata file in place (for thresholds above 1)."""
    metadata = metadata_file.read_bytes()
    for path in key:
        metadata = sign_metadata(metadata, load_signing_key(path))
    metadata_file.write_bytes(metadata)
    summary = summarize_metadata(metadata)
    console.print(f"{summary.role} v{summary.version}: signed by {len(summary.signed_by)} key(s)")


STATUS_FIELDS = [
    Column("initialized", lambda s: "yes" if s["initialized"] else "no"),
    Column("root", lambda s: f"v{s['root_version']}, expires {s['root_expires'][:10]}"),
    Column("roles", lambda s: "; ".join(
        f"{name} {len(r['keyids'])} key(s), threshold {r['threshold']}"
        for name, r in s["roles"].items())),
    Column("targets", lambda s: f"v{s['targets_version']}, {s['targets']} file(s), "
           f"expires {(s['targets_expires'] or '-')[:10]}" if s["targets_version"] else "none"),
]


@trust_app.command("status")
def status(ctx: typer.Context, output: Output = typer.Option(Output.TABLE, "-o", "--output")
           ) -> None:
    """Show the root of trust: versions, roles, thresholds, expiry."""
    with ctx.obj.client() as client:
        result = client.trust_status()
    if output is Output.JSON:
        print_json(result)
    elif not result["initialized"]:
        console.print("trust: not initialized (edgefleet trust init)")
    else:
        emit_object(result, output, STATUS_FIELDS)
