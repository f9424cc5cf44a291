"""`edgefleet delta create|apply|info`: make and apply artifact deltas offline, on plain files.

For operators (check what a delta saves before a rollout, patch a device by hand) and for
benchmarks. ONNX models get tensor-aware deltas; any other file a byte-level one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from edgefleet.artifacts.delta import DeltaInfo, apply_delta, create_delta, read_delta_info
from edgefleet.cli.output import Column, Output, console, emit_object

app = typer.Typer(help="Deltas between two versions of a file (offline).", no_args_is_help=True)

FormatOpt = typer.Option(Output.TABLE, "--format", help="table or json")


def _existing(help_text: str) -> Any:
    return typer.Argument(..., exists=True, dir_okay=False, readable=True, help=help_text)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _row(info: DeltaInfo, seconds: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "base_size": info.base_size,
        "base_sha256": info.base_sha256,
        "target_size": info.target_size,
        "target_sha256": info.target_sha256,
        "delta_size": info.delta_size,
        "ratio": round(info.ratio, 6),
        "tensor_ops": info.tensor_ops,
        "copy_ops": info.copy_ops,
        "literal_bytes": info.literal_bytes,
    }
    if seconds is not None:
        row["seconds"] = round(seconds, 3)
    return row


FIELDS = [
    Column("base", lambda r: _bytes(r["base_size"])),
    Column("base sha256", lambda r: r["base_sha256"]),
    Column("target", lambda r: _bytes(r["target_size"])),
    Column("target sha256", lambda r: r["target_sha256"]),
    Column("delta", lambda r: f"{_bytes(r['delta_size'])} ({r['ratio']:.2%} of the target)"),
    Column(
        "contents",
        lambda r: (
            f"{r['tensor_ops']} encoded tensors, {r['copy_ops']} copied ranges, "
            f"{_bytes(r['literal_bytes'])} of literal bytes"
        ),
    ),
]
TIME = Column("time", lambda r: f"{r['seconds']:.2f} s")


@app.command("create")
def create(
    old: Path = _existing("The version devices have"),
    new: Path = _existing("The version to ship"),
    out: Path = typer.Option(
        ..., "--output", "-o", dir_okay=False, help="Where to write the delta"
    ),
    fast: bool = typer.Option(
        False, help="Faster compression settings (mostly for non-ONNX files); a few % larger"
    ),
    output_format: Output = FormatOpt,
) -> None:
    """Create a delta that turns OLD into NEW."""
    started = time.perf_counter()
    info = create_delta(old, new, out, thorough=not fast)
    emit_object(_row(info, time.perf_counter() - started), output_format, [*FIELDS, TIME])


@app.command("apply")
def apply(
    old: Path = _existing("The version the delta was made from"),
    patch: Path = _existing("The delta"),
    out: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="Where to write"),
    expect_sha256: str | None = typer.Option(
        None, help="sha256 the result must have (from signed metadata); default: the delta's own"
    ),
    output_format: Output = FormatOpt,
) -> None:
    """Rebuild the new version from OLD and PATCH; nothing is written unless it verifies."""
    expected = expect_sha256
    if expected is None:
        expected = read_delta_info(patch).target_sha256
        if output_format is Output.TABLE:
            console.print(
                "[yellow]no --expect-sha256: checking against the hash the delta records[/yellow]"
            )
    started = time.perf_counter()
    info = apply_delta(old, patch, out, expected_sha256=expected)
    emit_object(_row(info, time.perf_counter() - started), output_format, [*FIELDS, TIME])


@app.command("info")
def info(patch: Path = _existing("The delta"), output_format: Output = FormatOpt) -> None:
    """Verify a delta's checksum and show what it turns into what."""
    emit_object(_row(read_delta_info(patch), None), output_format, FIELDS)
