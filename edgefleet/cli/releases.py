"""`edgefleet artifacts ...` and `edgefleet releases ...`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli.help_text import describe
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    console,
    emit_list,
    emit_object,
    format_time,
)
from edgefleet.cli.signing import (
    FILE_HELP,
    ROOT_FILE_HELP,
    local_files,
    release_files,
    show_review,
    verified_published,
)
from edgefleet.core.durations import parse_duration
from edgefleet.core.updates.release import ArtifactKind, parse_ref
from edgefleet.errors import InvalidInput
from edgefleet.security.signing_review import review_targets
from edgefleet.security.tuf_keys import load_signing_key
from edgefleet.security.tuf_metadata import parse_targets, sign_metadata, summarize_metadata

artifacts_app = typer.Typer(
    help="Versioned files: ONNX models, plain files, service specs.", no_args_is_help=True
)
releases_app = typer.Typer(
    help="Batches of artifacts that ship together, signed with TUF.", no_args_is_help=True
)

# How far the staged expiry may sit from now + the lifetime asked for: the server's clock
# and this machine's may differ a little.
EXPIRY_TOLERANCE = timedelta(hours=1)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _facts(a: dict[str, Any]) -> str:
    facts = a["facts"]
    if a["kind"] == "onnx-model" and facts:
        ins = ", ".join(f"{t['name']}{t['shape']}" for t in facts["inputs"])
        outs = ", ".join(f"{t['name']}{t['shape']}" for t in facts["outputs"])
        return f"{facts['parameter_count']} params · in {ins} · out {outs}"
    if a["kind"] == "service" and facts:
        return " ".join(facts["manifest"]["command"])[:80]
    return "-"


ARTIFACT_COLUMNS = [
    Column("NAME", lambda a: a["name"], "cyan"),
    Column("VERSION", lambda a: a["version"]),
    Column("KIND", lambda a: a["kind"]),
    Column("SIZE", lambda a: _size(a["size_bytes"])),
    Column("SHA256", lambda a: a["sha256"][:12]),
    Column("REQUIRES", lambda a: ",".join(a["requires"]) or "-"),
    Column("FACTS", _facts),
]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def push_file(
    client: Any, path: Path, name: str, version: str, kind: ArtifactKind, requires: list[str]
) -> dict[str, Any]:
    """Upload a file's blob and register it as `name@version`."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    sha = sha256_of(path)
    client.put_blob(path, sha)
    result: dict[str, Any] = client.create_artifact(
        name, version, kind.value, sha, path.name, requires
    )
    return result


@artifacts_app.command("push")
def push(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The file to upload"),
    name: str = typer.Option(..., help="Artifact name"),
    version: str = typer.Option(..., help="SemVer, e.g. 1.2.0"),
    kind: ArtifactKind = typer.Option(
        None, help="onnx-model, file or service [guessed from the extension]"
    ),
    requires: list[str] = typer.Option(
        [], help="Compatibility requirement KEY=VALUE, repeatable (e.g. arch=aarch64|x86_64)"
    ),
    output: Output = OutputOpt,
) -> None:
    """Upload a file as NAME@VERSION; ONNX models are validated and inspected."""
    chosen = kind or (ArtifactKind.ONNX_MODEL if file.suffix == ".onnx" else ArtifactKind.FILE)
    with ctx.obj.client() as client:
        emit_object(
            push_file(client, file, name, version, chosen, requires), output, ARTIFACT_COLUMNS
        )


@artifacts_app.command("list")
def list_artifacts(
    ctx: typer.Context, name: str = typer.Argument(None), output: Output = OutputOpt
) -> None:
    """List artifacts (all versions, or those of NAME)."""
    with ctx.obj.client() as client:
        emit_list(client.list_artifacts(name), output, ARTIFACT_COLUMNS)


@artifacts_app.command("show")
def show_artifact(ctx: typer.Context, ref: str, output: Output = OutputOpt) -> None:
    """Show one artifact: NAME@VERSION."""
    parsed = parse_ref(ref)
    with ctx.obj.client() as client:
        artifact = client.get_artifact(parsed.name, parsed.version)
    fields = [
        *ARTIFACT_COLUMNS,
        Column("SHA256 (full)", lambda a: a["sha256"]),
        Column("CREATED", lambda a: f"{format_time(a['created_at'])} by {a['created_by']}"),
    ]
    emit_object(artifact, output, fields)


def _percent(ratio: float | None) -> str:
    return f"{ratio:.1%}" if ratio is not None else "-"


DELTA_COLUMNS = [
    Column("FROM", lambda d: d["from_version"], "cyan"),
    Column("TO", lambda d: d["to_version"], "cyan"),
    Column("STATE", lambda d: d["state"]),
    Column("DELTA", lambda d: _size(d["delta_size"]) if d["delta_size"] is not None else "-"),
    Column("FULL", lambda d: _size(d["target_size"])),
    Column("DELTA / FULL", lambda d: _percent(d["ratio"])),
    Column("NOTE", lambda d: d["reason"] or ""),
]


@artifacts_app.command("delta-stats")
def delta_stats(
    ctx: typer.Context,
    name: str,
    compute: bool = typer.Option(False, help="Compute consecutive pairs not computed yet"),
    output: Output = OutputOpt,
) -> None:
    """Delta sizes per version pair of an artifact (devices get a delta only when it is
    smaller than the full file by a margin)."""
    with ctx.obj.client() as client:
        emit_list(client.delta_stats(name, compute), output, DELTA_COLUMNS)


RELEASE_COLUMNS = [
    Column("NAME", lambda r: r["name"], "cyan"),
    Column("VERSION", lambda r: r["version"]),
    Column("SIGNED", lambda r: f"yes (targets v{r['targets_version']})" if r["signed"] else "no"),
    Column("ARTIFACTS", lambda r: ", ".join(r["artifacts"])),
    Column("CREATED BY", lambda r: r["created_by"]),
]


@releases_app.command("create")
def create_release(
    ctx: typer.Context,
    name: str,
    version: str = typer.Option(..., help="SemVer"),
    artifact: list[str] = typer.Option([], help="NAME@VERSION, repeatable"),
    service_file: Path = typer.Option(
        None,
        help="A service manifest (YAML) saying how to run the release; stored as the "
        "artifact NAME-service@VERSION together with the release (a refused release "
        "leaves neither behind)",
    ),
    output: Output = OutputOpt,
) -> None:
    """Create a release: artifacts that ship together. Sign it next."""
    service = None if service_file is None else (service_file.name, _read_text(service_file))
    with ctx.obj.client() as client:
        emit_object(
            client.create_release(name, version, list(artifact), service), output, RELEASE_COLUMNS
        )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None


@releases_app.command("list")
def list_releases(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List releases."""
    with ctx.obj.client() as client:
        emit_list(client.list_releases(), output, RELEASE_COLUMNS)


@releases_app.command("show")
def show_release(ctx: typer.Context, ref: str, output: Output = OutputOpt) -> None:
    """Show a release and its files: NAME@VERSION."""
    parsed = parse_ref(ref, "release")
    with ctx.obj.client() as client:
        release = client.get_release(parsed.name, parsed.version)
    if output.is_document or output is Output.NAME:
        emit_object(release, output, [], name=lambda r: f"{r['name']}@{r['version']}")
        return
    emit_object(release, output, RELEASE_COLUMNS)
    emit_list(release["files"], output, ARTIFACT_COLUMNS)


@releases_app.command("sign")
def sign_release(
    ctx: typer.Context,
    ref: str,
    key: list[Path] = typer.Option(..., help="Targets signing key file, repeatable"),
    expires: str = typer.Option("90d", help="Targets metadata lifetime"),
    root_file: Path = typer.Option(None, help=ROOT_FILE_HELP),
    file: list[Path] = typer.Option([], help=FILE_HELP),
    output: Output = OutputOpt,
) -> None:
    """Stage the release's targets metadata, check it, sign it here with your targets
    key(s), and publish it; the keys never leave this machine. The staged metadata must be
    the published targets (verified from your trusted root) plus exactly this release's
    files, the next version, with the lifetime asked for: the files it adds are shown,
    anything else is refused before signing."""
    parsed = parse_ref(ref, "release")
    lifetime = parse_duration(expires)
    signers = [load_signing_key(k) for k in key]
    mine = local_files(file)
    with ctx.obj.client() as client:
        published = verified_published(ctx, client, root_file)
        expected = release_files(client, parsed)
        metadata = client.stage_release(parsed.name, parsed.version, expires)
        now = datetime.now(UTC)
        review = review_targets(
            parse_targets(metadata),
            None if published.targets is None else published.targets.signed,
            expected,
            now=now,
            expires_within=(now + lifetime - EXPIRY_TOLERANCE, now + lifetime + EXPIRY_TOLERANCE),
            local_files=mine,
        )
        show_review(review.lines(), output)
        for signer in signers:
            metadata = sign_metadata(metadata, signer)
        published_release = client.publish_release(parsed.name, parsed.version, metadata)
    emit_object(published_release, output, RELEASE_COLUMNS)


@releases_app.command("stage")
def stage_release(
    ctx: typer.Context,
    ref: str,
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the unsigned metadata"),
    expires: str = typer.Option(None, help="Targets metadata lifetime [90d]"),
) -> None:
    """Write the release's unsigned targets metadata to a file, for signers who each add
    their signature with `edgefleet trust sign` (threshold > 1), then `releases submit`."""
    parsed = parse_ref(ref, "release")
    with ctx.obj.client() as client:
        metadata = client.stage_release(parsed.name, parsed.version, expires)
    out.write_bytes(metadata)
    summary = summarize_metadata(metadata)
    console.print(
        f"wrote {summary.role} v{summary.version} to {out} "
        f"({len(metadata)} bytes); sign it, then submit it"
    )


@releases_app.command("submit")
def submit_release(
    ctx: typer.Context,
    ref: str,
    metadata_file: Path = typer.Argument(..., help="Targets metadata signed by enough keys"),
    output: Output = OutputOpt,
) -> None:
    """Publish targets metadata signed offline."""
    parsed = parse_ref(ref, "release")
    with ctx.obj.client() as client:
        published = client.publish_release(parsed.name, parsed.version, metadata_file.read_bytes())
    emit_object(published, output, RELEASE_COLUMNS)


describe(artifacts_app, {
    "push": ["edgefleet artifacts push model.onnx --name detector --version 2.1.0",
             "edgefleet artifacts push labels.txt --name labels --version 1.0.0 "
             "--requires arch=aarch64"],
    "list": ["edgefleet artifacts list detector"],
    "show": ["edgefleet artifacts show detector@2.1.0"],
    "delta-stats": ["edgefleet artifacts delta-stats detector --compute"],
})  # fmt: skip
describe(releases_app, {
    "create": ["edgefleet releases create vision --version 1.2.0 --artifact detector@2.1.0 "
               "--service-file service.yaml"],
    "list": ["edgefleet releases list"],
    "show": ["edgefleet releases show vision@1.2.0"],
    "sign": ["edgefleet releases sign vision@1.2.0 --key targets.key"],
    "stage": ["edgefleet releases stage vision@1.2.0 -o vision.targets.json"],
    "submit": ["edgefleet releases submit vision@1.2.0 vision.targets.json"],
})  # fmt: skip
