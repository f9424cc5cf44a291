"""`edgefleet bench ...`: the benchmark suite of a source checkout (`bench/run_all.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

import edgefleet
from edgefleet.errors import SettingsError

app = typer.Typer(
    help="Run the benchmark suite (needs a source checkout's bench/).", no_args_is_help=True
)


def bench_dir() -> Path:
    """bench/ of the source tree edgefleet runs from, or EDGEFLEET_BENCH_DIR, or ./bench."""
    candidates = [
        os.environ.get("EDGEFLEET_BENCH_DIR"),
        str(Path(edgefleet.__file__).resolve().parent.parent / "bench"),
        str(Path.cwd() / "bench"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "run_all.py").exists():
            return Path(candidate)
    raise SettingsError(
        "no bench/run_all.py found: run from a source checkout or set EDGEFLEET_BENCH_DIR"
    )


@app.command("all")
def run_all(
    quick: bool = typer.Option(False, "--quick", help="Small sizes: a few minutes in all"),
    only: list[str] = typer.Option([], "--only", help="Run just these (repeatable)"),
    skip: list[str] = typer.Option([], "--skip", help="Leave these out (repeatable)"),
    reuse: list[str] = typer.Option(
        [], "--reuse", help="Report this one's last result instead of running it (repeatable)"
    ),
) -> None:
    """Run every benchmark, then write bench/results/latest.json and latest.md."""
    args = [sys.executable, str(bench_dir() / "run_all.py")]
    args += ["--quick"] if quick else []
    for name in only:
        args += ["--only", name]
    for name in skip:
        args += ["--skip", name]
    for name in reuse:
        args += ["--reuse", name]
    raise typer.Exit(subprocess.run(args, check=False).returncode)


@app.command("list")
def list_benchmarks() -> None:
    """The benchmarks `bench all` runs."""
    args = [sys.executable, str(bench_dir() / "run_all.py"), "--list"]
    raise typer.Exit(subprocess.run(args, check=False).returncode)
