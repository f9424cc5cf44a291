"""The installer's sandboxed model check: run edgefleet.agent.sandbox_check in a child process
under a memory limit (RLIMIT_AS) and a wall-clock timeout, and turn what happened into a
`SandboxVerdict` whose `reason` is one line an operator can act on::

    corrupt.onnx: cannot load: INVALID_PROTOBUF: ... Protobuf parsing failed.
    wrong.onnx: output 'y' has shape [1, 4], declared [batch, 3]
    hog.onnx: out of memory (limit 512 MB)
    slow.onnx: timed out after 30 s
    a.onnx: crashed with signal SIGSEGV

A model that loads, runs once on generated input and produces outputs of its declared
shapes passes; anything else refuses the install. The child runs through the `Runtime`
port and waits on the `Clock`, so a simulator can substitute both.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgefleet
from edgefleet.agent.process_runtime import HostRuntime, ProcessHandle, ProcessSpec, Runtime
from edgefleet.clock import Clock, SystemClock
from edgefleet.core.updates.restart_policy import describe_exit

DEFAULT_MEMORY_LIMIT_MB = 512
DEFAULT_TIMEOUT_S = 30.0
# What a child under RLIMIT_AS prints when an allocation or a library mapping fails.
_MEMORY_MARKERS = (
    "MemoryError",
    "bad_alloc",
    "Failed to allocate memory",
    "failed to map segment",
    "out of memory",
)
_OUTPUT_TAIL_CHARS = 200


@dataclass(frozen=True)
class ModelCheck:
    """How one model fared. `stage` is where it stopped (`done` when it passed)."""

    path: Path
    ok: bool
    stage: str
    reason: str = ""
    output_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    run_ms: float | None = None


@dataclass(frozen=True)
class SandboxVerdict:
    ok: bool
    reason: str  # "" when ok; otherwise the first failing model's name and reason
    models: tuple[ModelCheck, ...]


async def check_models(
    paths: Sequence[Path],
    *,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    runtime: Runtime | None = None,
    clock: Clock | None = None,
    log_path: Path | None = None,
    python: str = sys.executable,
) -> SandboxVerdict:
    """Check every model in one sandboxed child; the verdict refuses on the first failure.

    The child's output is appended to `log_path` when given (a temporary file otherwise).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return SandboxVerdict(True, "", ())
    own_runtime = runtime is None
    runtime = runtime or HostRuntime()
    try:
        with tempfile.TemporaryDirectory(prefix="edgefleet-sandbox-") as scratch:
            output_path = log_path or Path(scratch) / "sandbox.log"
            spec = _child_spec(paths, memory_limit_mb, timeout_s, output_path, python)
            offset = output_path.stat().st_size if output_path.exists() else 0
            try:
                handle = await runtime.spawn(spec)
            except OSError as e:
                return _refuse(paths, f"sandbox could not start: {e.strerror or e}")
            exit_code = await _wait_at_most(handle, timeout_s, clock or SystemClock())
            output = _read_from(output_path, offset)
    finally:
        if own_runtime and isinstance(runtime, HostRuntime):
            await runtime.close()
    return _verdict(paths, output, exit_code, memory_limit_mb, timeout_s)


def _child_spec(
    paths: list[Path], memory_limit_mb: int, timeout_s: float, output_path: Path, python: str
) -> ProcessSpec:
    # The child must import edgefleet even when the agent runs from a source tree.
    package_root = str(Path(edgefleet.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return ProcessSpec(
        name="sandbox-check",
        command=[python, "-m", "edgefleet.agent.sandbox_check", *map(str, paths)],
        env={
            "PYTHONPATH": python_path,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        },
        log_path=output_path,
        memory_limit_mb=memory_limit_mb,
        # A backstop only: the wall-clock timeout below normally ends the child first.
        cpu_seconds_limit=math.ceil(timeout_s) + 1,
    )


async def _wait_at_most(handle: ProcessHandle, timeout_s: float, clock: Clock) -> int | None:
    """The exit code, or None for a child still running after `timeout_s`.

    The child's process group is killed in every case (also when the caller is cancelled):
    nothing it started may survive the check.
    """
    waiter = asyncio.ensure_future(handle.wait())
    timer = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        return waiter.result() if waiter.done() else None
    finally:
        for task in (waiter, timer):
            task.cancel()
        await asyncio.gather(waiter, timer, return_exceptions=True)
        await handle.terminate(0)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _parse_results(output: str) -> dict[str, dict[str, Any]]:
    """The child's JSON result lines by model path; other lines (warnings) are skipped."""
    results: dict[str, dict[str, Any]] = {}
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and isinstance(result.get("model"), str):
            results[result["model"]] = result
    return results


def _model_check(path: Path, result: dict[str, Any], memory_limit_mb: int) -> ModelCheck:
    reason = str(result.get("reason", ""))
    if "out of memory" in reason:
        reason = f"out of memory (limit {memory_limit_mb} MB)"
    shapes = result.get("outputs") or {}
    return ModelCheck(
        path=path,
        ok=bool(result.get("ok")),
        stage=str(result.get("stage", "")),
        reason=reason,
        output_shapes={str(k): tuple(int(d) for d in v) for k, v in shapes.items()},
        run_ms=result.get("run_ms"),
    )


def _crash_reason(
    output: str, exit_code: int | None, memory_limit_mb: int, timeout_s: float
) -> str:
    """Why the child died without reporting on a model."""
    if exit_code is None:
        return f"timed out after {timeout_s:g} s"
    if any(marker in output for marker in _MEMORY_MARKERS):
        return f"out of memory (limit {memory_limit_mb} MB)"
    if exit_code == -signal.SIGXCPU:
        return f"exceeded the CPU time limit of {math.ceil(timeout_s) + 1} s"
    if exit_code < 0:
        return f"crashed with {describe_exit(exit_code)}"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    tail = f": {lines[-1][:_OUTPUT_TAIL_CHARS]}" if lines else ""
    return f"sandbox check failed with {describe_exit(exit_code)}{tail}"


def _verdict(
    paths: list[Path], output: str, exit_code: int | None, memory_limit_mb: int, timeout_s: float
) -> SandboxVerdict:
    results = _parse_results(output)
    checks: list[ModelCheck] = []
    crashed = False
    for path in paths:
        result = results.get(str(path))
        if result is not None:
            checks.append(_model_check(path, result, memory_limit_mb))
        elif not crashed:
            # The child stopped while on this model: the crash is this model's doing.
            reason = _crash_reason(output, exit_code, memory_limit_mb, timeout_s)
            checks.append(ModelCheck(path, False, "crashed", reason))
            crashed = True
        else:
            checks.append(ModelCheck(path, False, "not-checked", "not checked"))
    if exit_code != 0 and all(c.ok for c in checks):
        # Every model reported success but the child still failed or overran: refuse.
        reason = _crash_reason(output, exit_code, memory_limit_mb, timeout_s)
        return SandboxVerdict(False, reason, tuple(checks))
    failed = next((c for c in checks if not c.ok), None)
    if failed is None:
        return SandboxVerdict(True, "", tuple(checks))
    return SandboxVerdict(False, f"{failed.path.name}: {failed.reason}", tuple(checks))


def _refuse(paths: list[Path], reason: str) -> SandboxVerdict:
    return SandboxVerdict(
        False, reason, tuple(ModelCheck(p, False, "not-checked", reason) for p in paths)
    )
