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
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgefleet.agent.child_channel import Channel, Job, serve
from edgefleet.agent.release_verification import (
    VerifyRequest,
    check_release,
)
from edgefleet.errors import InvalidInput

MODULE = "edgefleet.agent.install_child"


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


JOBS: dict[str, Job] = {
    "verify_release": _verify_release,
    "apply_delta": _apply_delta,
    "pin_root": _pin_root,
    "read_manifest": _read_manifest,
}


def main() -> int:
    return serve(JOBS)


if __name__ == "__main__":
    sys.exit(main())
