"""Benchmark: edgefleet's tensor-aware deltas against bsdiff4, xdelta3 -9 and zstd --patch-from.

    .venv/bin/python bench/delta/run.py [--quick] [--json bench/results/delta.json]

Generates the model pairs of `model_pairs.py` (nothing is downloaded), then for every pair
and every tool measures the patch size, the time to create it, the time to apply it and
the peak memory (max RSS) of the process that applies it. Each create and apply runs in
its own process under `/usr/bin/time`, so the peak is that process's alone (a child
forked from this big benchmark process would inherit its high-water mark). Every applied
file is checked against the new model's sha256.

It also prints, per pair, an entropy estimate of what changed (see `entropy_floor_bytes`):
not a hard bound, but a yardstick for how far any lossless coder could go without a model
of the update itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from model_pairs import ModelPair, generate_pairs
from onnx import numpy_helper
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TIME = "/usr/bin/time"
console = Console(width=110)  # wide enough for the tables, also when piped


@dataclass
class Tool:
    name: str
    create: list[str]
    apply: list[str]


def _python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


def tools(old: Path, new: Path, patch: Path, out: Path, sha256: str) -> list[Tool]:
    """The contenders, as commands; {old} etc. are already filled in."""
    o, n, p, r = (str(x) for x in (old, new, patch, out))
    found = [
        Tool(
            "edgefleet",
            _python(
                "from pathlib import Path; from edgefleet.artifacts.delta import create_delta; "
                f"create_delta(Path({o!r}), Path({n!r}), Path({p!r}))"
            ),
            _python(
                "from pathlib import Path; from edgefleet.artifacts.delta import apply_delta; "
                f"apply_delta(Path({o!r}), Path({p!r}), Path({r!r}), expected_sha256={sha256!r})"
            ),
        ),
        Tool(
            "edgefleet --fast",
            _python(
                "from pathlib import Path; from edgefleet.artifacts.delta import create_delta; "
                f"create_delta(Path({o!r}), Path({n!r}), Path({p!r}), thorough=False)"
            ),
            _python(
                "from pathlib import Path; from edgefleet.artifacts.delta import apply_delta; "
                f"apply_delta(Path({o!r}), Path({p!r}), Path({r!r}), expected_sha256={sha256!r})"
            ),
        ),
        Tool(
            "bsdiff4",
            _python(f"import bsdiff4; bsdiff4.file_diff({o!r}, {n!r}, {p!r})"),
            _python(f"import bsdiff4; bsdiff4.file_patch({o!r}, {r!r}, {p!r})"),
        ),
    ]
    if shutil.which("xdelta3"):
        found.append(
            Tool(
                "xdelta3 -9",
                ["xdelta3", "-9", "-e", "-f", "-s", o, n, p],
                ["xdelta3", "-d", "-f", "-s", o, p, r],
            )
        )
    if shutil.which("zstd"):
        found.append(
            Tool(
                "zstd -19 --patch-from",
                ["zstd", "-q", "-f", "-19", f"--patch-from={o}", n, "-o", p],
                ["zstd", "-q", "-f", "-d", f"--patch-from={o}", p, "-o", r],
            )
        )
        found.append(
            Tool(
                "zstd -19 (no base)",
                ["zstd", "-q", "-f", "-19", n, "-o", p],
                ["zstd", "-q", "-f", "-d", p, "-o", r],
            )
        )
    return found


PEERS = ("bsdiff4", "xdelta3 -9", "zstd -19 --patch-from")
# The targets: never larger than the best peer; on dense fine-tunes at most 0.6x.
DENSE = ("b_all_tensors", "d_trained", "d2_trained_gentle")


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one command, run to completion."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        subprocess.run(
            [TIME, "-f", "%M", "-o", report.name, *command],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        seconds = time.perf_counter() - started
        peak_kib = int(report.read().split()[-1])
    return seconds, peak_kib / 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the yardstick


def _entropy_bits(values: np.ndarray) -> float:
    """Order-0 empirical entropy, in bits per value."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _float32_change_bits(old: np.ndarray, new: np.ndarray) -> float:
    """Bits to code new given old: which changed, then each change's integer step, coded
    order-0 within groups of equal old exponent (the decoder knows it), low bits counted
    as raw once they are uniform."""
    o = old.view(np.uint32).astype(np.int64)
    n = new.view(np.uint32).astype(np.int64)

    def ordered(u: np.ndarray) -> np.ndarray:
        return np.where(u >> 31 == 1, -(u & 0x7FFFFFFF), u)

    step = ordered(n) - ordered(o)
    changed = step != 0
    p = changed.mean()
    bits = 0.0 if p in (0.0, 1.0) else len(o) * float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    zigzag = np.abs(step[changed]) * 2 - (step[changed] < 0)
    exponent = (o[changed] >> 23) & 0xFF
    for e in np.unique(exponent):
        group = zigzag[exponent == e]
        best = 64.0
        for k in range(40):
            high = group >> k
            # An empirical entropy is only trustworthy when symbols repeat.
            if len(np.unique(high)) <= max(16, len(group) // 64):
                best = min(best, k + _entropy_bits(high))
        bits += best * len(group)
    return bits


def _alone_bits(array: np.ndarray) -> float:
    if array.dtype == np.float32:
        exponent = (array.view(np.uint32) >> 23) & 0xFF
        return array.size * (24 + _entropy_bits(exponent.ravel()))
    return array.size * _entropy_bits(array.ravel())


def entropy_floor_bytes(pair: ModelPair) -> int:
    """Order-0 entropy of the changed tensors, each given its old version when that helps."""
    old = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(pair.old)).graph.initializer}
    bits = 0.0
    for t in onnx.load(str(pair.new)).graph.initializer:
        new = numpy_helper.to_array(t)
        before = old.get(t.name)
        if before is not None and before.shape == new.shape and before.dtype == new.dtype:
            if before.tobytes() == new.tobytes():
                continue
            if new.dtype == np.float32:
                bits += min(_float32_change_bits(before.ravel(), new.ravel()), _alone_bits(new))
                continue
            if new.dtype in (np.int8, np.uint8):
                diff = new.astype(np.int16) - before.astype(np.int16)
                bits += min(new.size * _entropy_bits(diff.ravel()), _alone_bits(new))
                continue
        known = new.dtype in (np.float32, np.int8, np.uint8)
        bits += _alone_bits(new) if known else new.nbytes * 8
    return int(bits / 8)


# ------------------------------------------------------------------ running


def run_pair(pair: ModelPair, workdir: Path) -> dict[str, object]:
    new_size = pair.new.stat().st_size
    expected = sha256(pair.new)
    results: dict[str, dict[str, float]] = {}
    for tool in tools(pair.old, pair.new, workdir / "patch", workdir / "out", expected):
        create_s, create_mb = measure(tool.create)
        patch_bytes = (workdir / "patch").stat().st_size
        apply_s, apply_mb = measure(tool.apply)
        if sha256(workdir / "out") != expected:
            raise SystemExit(f"{tool.name} did not rebuild {pair.name} exactly")
        results[tool.name] = {
            "patch_bytes": patch_bytes,
            "percent_of_new": round(100 * patch_bytes / new_size, 3),
            "create_s": round(create_s, 3),
            "create_peak_mb": round(create_mb, 1),
            "apply_s": round(apply_s, 3),
            "apply_peak_mb": round(apply_mb, 1),
        }
        (workdir / "patch").unlink()
        (workdir / "out").unlink()
    best_peer = min((results[p]["patch_bytes"], p) for p in PEERS if p in results)
    ours = results["edgefleet"]
    floor = entropy_floor_bytes(pair)
    return {
        "pair": pair.name,
        "description": pair.description,
        "old_bytes": pair.old.stat().st_size,
        "new_bytes": new_size,
        "tools": results,
        "best_peer": best_peer[1],
        "size_vs_best_peer": round(ours["patch_bytes"] / best_peer[0], 3),
        "size_target": 0.6 if pair.name in DENSE else 1.0,
        "create_vs_bsdiff4": round(ours["create_s"] / results["bsdiff4"]["create_s"], 3),
        "entropy_estimate_bytes": floor,
        "entropy_estimate_percent": round(100 * floor / new_size, 2),
        "apply_budget_mb": round(new_size / 2**20 + 32, 1),
    }


def baseline_mb() -> float:
    """Peak RSS of a Python that only imports what applying a tensor delta imports."""
    imports = "import numpy, edgefleet.artifacts.delta, edgefleet.artifacts.tensor_codec"
    return measure(_python(imports))[1]


def print_report(rows: list[dict[str, object]], interpreter_mb: float) -> None:
    for row in rows:
        table = Table(
            title=f"{row['pair']}: {row['description']} "
            f"({row['new_bytes'] / 2**20:.1f} MiB; entropy estimate "
            f"{row['entropy_estimate_percent']}%)",
            title_justify="left",
        )
        for header in ("tool", "patch bytes", "% of new", "create s", "apply s", "apply peak MB"):
            table.add_column(header, justify="left" if header == "tool" else "right")
        tools_run = row["tools"]
        assert isinstance(tools_run, dict)
        for name, r in tools_run.items():
            style = "bold" if name == "edgefleet" else None
            table.add_row(
                name,
                f"{r['patch_bytes']:,}",
                f"{r['percent_of_new']:.2f}",
                f"{r['create_s']:.2f}",
                f"{r['apply_s']:.2f}",
                f"{r['apply_peak_mb']:.1f}",
                style=style,
            )
        console.print(table)
        ours_mb = tools_run["edgefleet"]["apply_peak_mb"]
        console.print(
            f"  edgefleet / best peer ({row['best_peer']}): {row['size_vs_best_peer']:.3f}x; "
            f"apply peak {ours_mb:.1f} MB = {interpreter_mb:.1f} MB interpreter with numpy + "
            f"{ours_mb - interpreter_mb:.1f} MB; budget (model + 32 MiB) "
            f"{row['apply_budget_mb']} MB\n"
        )


def print_summary(rows: list[dict[str, object]], interpreter_mb: float) -> None:
    table = Table(title="edgefleet against the targets", title_justify="left")
    headers = ("pair", "vs peer", "target", "create/bsdiff", "apply MB", "budget MB")
    for header in headers:
        table.add_column(header, justify="left" if header == "pair" else "right", no_wrap=True)
    for row in rows:
        tools_run = row["tools"]
        assert isinstance(tools_run, dict)
        peak = tools_run["edgefleet"]["apply_peak_mb"]
        ratio, target = row["size_vs_best_peer"], row["size_target"]
        assert isinstance(ratio, float) and isinstance(target, float)
        mark = "[green]met[/green]" if ratio <= target else "[red]missed[/red]"
        table.add_row(
            str(row["pair"]),
            f"{ratio:.3f}",
            f"<= {target} {mark}",
            f"{row['create_vs_bsdiff4']:.3f}",
            f"{peak:.1f} = {interpreter_mb:.1f}+{peak - interpreter_mb:.1f}",
            f"{row['apply_budget_mb']}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="models about 8x smaller")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "delta.json")
    parser.add_argument("--workdir", type=Path, help="keep the generated models here")
    args = parser.parse_args()
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} (GNU time) is needed to measure peak memory per process")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        pairs = generate_pairs(workdir / "models", args.quick, log=console.print)
        interpreter_mb = baseline_mb()
        rows = []
        for pair in pairs:
            console.print(f"[dim]measuring {pair.name} ...[/dim]")
            rows.append(run_pair(pair, workdir))
    print_report(rows, interpreter_mb)
    print_summary(rows, interpreter_mb)
    report = {
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "interpreter_with_numpy_peak_mb": interpreter_mb,
        "pairs": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
