"""The install helper's child process: `python -m edgefleet.agent.install_child`.

It does one job for the agent and exits, so what the job imports leaves with it: python-tuf,
securesystemslib and cryptography to verify release metadata (`verify_release`,
`pin_root`), numpy to apply a delta (`apply_delta`), PyYAML to read a release's service
manifest (`read_manifest`). The agent side is `install_helper.py`.
One JSON object per line::

    agent -> child   {"job": "verify_release" | "apply_delta" | "pin_root" | "read_manifest",
                      "args": {...}}
    child -> agent   {"fetch": "/v1/tuf/2.root.json"}     a metadata file, which the agent
    agent -> child   {"body": BASE64} | {"error": ERROR}   fetches over its signed link
    child -> agent   {"warning": "..."}                   a line for the agent's log
    child -> agent   {"result": ...} | {"error": ERROR}   the last line; the child exits 0

ERROR is `{"type", "code", "message"}` (+ `"status"` for an ApiError): an edgefleet error,
raised again on the other side as the same class. Whatever else the child prints goes to
stderr (stdout is kept for these lines); any other failure is a traceback on stderr and a
non-zero exit, which the agent treats as a failed job. The child ignores SIGINT and SIGTERM:
the agent kills it when it stops, so a Ctrl-C or a service manager's SIGTERM to the whole
group never turns into a failed verification.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from edgefleet.agent.release_verification import (
    ReleaseRefused,
    VerifyRequest,
    check_release,
)
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

MODULE = "edgefleet.agent.install_child"
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


def _verify_release(args: Mapping[str, Any], channel: Channel) -> Any:
    files = check_release(VerifyRequest.from_wire(args), channel.fetch, channel.warn)
    return [f.to_wire() for f in files]


def _apply_delta(args: Mapping[str, Any], channel: Channel) -> Any:
    from edgefleet.artifacts.delta import apply_delta

    apply_delta(Path(args["base"]), Path(args["delta"]), Path(args["out"]),
                expected_sha256=str(args["expected_sha256"]))  # fmt: skip
    return None


def _pin_root(args: Mapping[str, Any], channel: Channel) -> Any:
    from edgefleet.security.tuf_client import TufClient

    def decoded(value: Any) -> bytes | None:
        return None if value is None else base64.b64decode(value)

    rotations = [base64.b64decode(r) for r in args.get("rotations") or []]
    anchor = TufClient.enrollment_anchor(decoded(args["root"]), decoded(args.get("pinned")),
                                         rotations)  # fmt: skip
    TufClient.store_enrollment_root(Path(args["tuf_dir"]), anchor)
    return None


def read_service_manifest(path: Path) -> dict[str, Any]:
    """A release's service manifest file (YAML), validated: InvalidInput when refused."""
    import yaml

    from edgefleet.core.updates.service_manifest import MAX_MANIFEST_BYTES, parse_service_manifest

    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InvalidInput(f"service manifest is over {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(f"service manifest is not YAML: {e}") from None
    parse_service_manifest(raw)
    manifest: dict[str, Any] = raw
    return manifest


def _read_manifest(args: Mapping[str, Any], channel: Channel) -> Any:
    return read_service_manifest(Path(args["path"]))


JOBS: dict[str, Callable[[Mapping[str, Any], Channel], Any]] = {
    "verify_release": _verify_release,
    "apply_delta": _apply_delta,
    "pin_root": _pin_root,
    "read_manifest": _read_manifest,
}


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # The conversation keeps the real stdout; anything else printed lands on stderr.
    channel = Channel(sys.stdin.buffer, os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    request = channel.read()
    job = JOBS[request["job"]]
    try:
        result = job(request["args"], channel)
    except EdgefleetError as e:
        channel.write({"error": error_to_wire(e)})
    else:
        channel.write({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
