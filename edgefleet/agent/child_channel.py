"""The conversation between the agent and a short-lived child process (the install helper's
`install_child`, the training helper's `training_child`): one JSON object per line, errors
carried as messages and raised again on the other side as the same class.

The child's side is `Channel` and `serve` (its `main`); the agent's side starts the child
with `child_environment()`, writes with `send`, keeps the last of its stderr with
`stderr_tail`, and reads lines of at most MAX_MESSAGE_BYTES.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import edgefleet
from edgefleet.agent.process_runtime import inherited_environment
from edgefleet.agent.release_verification import ReleaseRefused
from edgefleet.errors import (
    ApiError,
    Conflict,
    EdgefleetError,
    Forbidden,
    InvalidInput,
    NotFound,
    SettingsError,
    Unauthenticated,
    Unavailable,
)

EXIT_GRACE_S = 10.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the longest line the agent reads from the child
STDERR_TAIL_BYTES = 8 * 1024

Job = Callable[[Mapping[str, Any], "Channel"], Any]

_ERROR_TYPES: dict[str, type[EdgefleetError]] = {
    cls.__name__: cls
    for cls in (EdgefleetError, InvalidInput, Unauthenticated, Forbidden, NotFound, Conflict,
                SettingsError, Unavailable, ReleaseRefused)
}  # fmt: skip


def error_to_wire(error: EdgefleetError) -> dict[str, Any]:
    """An error as one message field; its class is the nearest one both sides know."""
    wire: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, ApiError):
        return {"type": "ApiError", "status": error.status, **wire}
    name = next(c.__name__ for c in type(error).__mro__ if c.__name__ in _ERROR_TYPES)
    return {"type": name, **wire}


def error_from_wire(raw: object) -> EdgefleetError:
    """The error `error_to_wire` described; ValueError when `raw` is not such a message."""
    if not isinstance(raw, dict):
        raise ValueError("an error must be an object")
    kind, code, message = raw.get("type"), raw.get("code"), raw.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        raise ValueError("an error needs a code and a message")
    if kind == "ApiError" and isinstance(raw.get("status"), int):
        return ApiError(raw["status"], code, message)
    if not isinstance(kind, str) or kind not in _ERROR_TYPES:
        raise ValueError(f"unknown error type {kind!r}")
    return _ERROR_TYPES[kind](message, code=code)


class Channel:
    """The child's end of the conversation: JSON lines in, JSON lines out."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader = reader
        self._writer = writer

    def read(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise EOFError("the agent closed the conversation")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("a message must be a JSON object")
        return message

    def write(self, message: Mapping[str, Any]) -> None:
        self._writer.write(json.dumps(message).encode() + b"\n")
        self._writer.flush()

    def fetch(self, url: str) -> bytes:
        """A metadata file, fetched by the agent."""
        self.write({"fetch": url})
        reply = self.read()
        if "body" in reply:
            return base64.b64decode(reply["body"], validate=True)
        raise error_from_wire(reply.get("error"))

    def warn(self, message: str) -> None:
        self.write({"warning": message})


def serve(jobs: Mapping[str, Job]) -> int:
    """The child's main: answer the one job the agent asks for, then return the exit code.

    The child ignores SIGINT and SIGTERM (the agent kills it when it stops); the
    conversation keeps the real stdout, and anything else printed lands on stderr."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    channel = Channel(sys.stdin.buffer, os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    request = channel.read()
    job = jobs.get(str(request.get("job")))
    if job is None:
        error = EdgefleetError(f"no job {request.get('job')!r}")
        channel.write({"error": error_to_wire(error)})
        return 0
    try:
        result = job(request["args"], channel)
    except EdgefleetError as e:
        channel.write({"error": error_to_wire(e)})
    else:
        channel.write({"result": result})
    return 0


async def send(stream: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message).encode() + b"\n")
    await stream.drain()


async def stderr_tail(stream: asyncio.StreamReader) -> str:
    """Everything the child writes to stderr, keeping only the last STDERR_TAIL_BYTES."""
    kept = b""
    while chunk := await stream.read(64 * 1024):
        kept = (kept + chunk)[-STDERR_TAIL_BYTES:]
    return kept.decode("utf-8", "replace")


def child_environment() -> dict[str, str]:
    # The child must import edgefleet even when the agent runs from a source tree; numpy's
    # math libraries get one thread (a delta is applied chunk by chunk anyway). Like the
    # runtime's children it sees none of the agent's secrets (the enrollment token).
    package_root = str(Path(edgefleet.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**inherited_environment(os.environ), "PYTHONPATH": python_path,
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
