"""The training child: `python -m edgefleet.agent.training_child`, one federated training
round for the agent, then exit (so numpy, the model and the round's secrets leave with it;
the agent's idle footprint does not change). The agent side is `training_helper.py`.
JSON lines, as the install child's::

    agent -> child   {"job": "train_round", "args": {"device_id", "job", "round",
                                                      "cache_dir", "poll_s"}}
    child -> agent   {"request": {"method", "target", "body": BASE64}}   a device request
    agent -> child   {"body": BASE64} | {"error": ERROR}    the agent signs and sends it
    child -> agent   {"result": {...}} | {"error": ERROR}   the last line; the child exits 0

The agent relays only requests to this round's training routes of its own device.
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgefleet.agent.child_channel import Channel, error_from_wire, serve
from edgefleet.agent.training_client import ModelCache, run_round

MODULE = "edgefleet.agent.training_child"


def _exchange(channel: Channel) -> Any:
    def exchange(method: str, target: str, body: bytes) -> bytes:
        channel.write({"request": {"method": method, "target": target,
                                   "body": base64.b64encode(body).decode()}})  # fmt: skip
        reply = channel.read()
        if "body" in reply:
            return base64.b64decode(reply["body"], validate=True)
        raise error_from_wire(reply.get("error"))

    return exchange


def train_round(args: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    poll_s = float(args.get("poll_s", 1.0))
    return run_round(_exchange(channel), str(args["device_id"]), str(args["job"]),
                     int(args["round"]), ModelCache(Path(args["cache_dir"])),
                     secrets.token_bytes, lambda: time.sleep(poll_s))  # fmt: skip


def main() -> int:
    return serve({"train_round": train_round})


if __name__ == "__main__":
    sys.exit(main())
