"""One real agent process with faults injected at its seams, for crash-safety tests and the
failover benchmark:

    EDGEFLEET_FAULT_KILL_AT=staged python -m edgefleet.sim.faulty_agent --server ... [flags]
    EDGEFLEET_FAULT_HEARTBEAT_LOSS=0.1 python -m edgefleet.sim.faulty_agent ...

The flags are `edgefleet agent`'s. EDGEFLEET_FAULT_KILL_AT=<install state>[,<state>...]: the
machine loses power (SIGKILL) right after the agent journals that install step
(sim/hardware.py PowerLossAt). EDGEFLEET_FAULT_HEARTBEAT_LOSS=<share in [0, 1)>: that share
of periodic heartbeats is lost on the link (sim/transport.py LossyHeartbeats). The agent
itself knows nothing of either: its production settings have no fault switch.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping

from edgefleet.agent.command import main as run_agent_command
from edgefleet.core.updates.install import InstallState
from edgefleet.sim.hardware import PowerLossAt
from edgefleet.sim.transport import LossyHeartbeats

KILL_AT_ENV = "EDGEFLEET_FAULT_KILL_AT"
HEARTBEAT_LOSS_ENV = "EDGEFLEET_FAULT_HEARTBEAT_LOSS"


def kill_moments(environ: Mapping[str, str]) -> frozenset[str]:
    """The `install:<state>` moments EDGEFLEET_FAULT_KILL_AT names; SystemExit naming it."""
    states = [s.strip() for s in environ.get(KILL_AT_ENV, "").split(",") if s.strip()]
    allowed = {s.value for s in InstallState}
    for state in states:
        if state not in allowed:
            sys.exit(f"error: bad {KILL_AT_ENV}={state!r}: one of {', '.join(sorted(allowed))}")
    return frozenset(f"install:{s}" for s in states)


def heartbeat_loss(environ: Mapping[str, str]) -> float:
    """The share EDGEFLEET_FAULT_HEARTBEAT_LOSS names (0: none); SystemExit naming it."""
    text = environ.get(HEARTBEAT_LOSS_ENV) or "0"
    try:
        loss = float(text)
    except ValueError:
        loss = -1.0
    if not 0 <= loss < 1:
        sys.exit(f"error: bad {HEARTBEAT_LOSS_ENV}={text!r}: a share in [0, 1)")
    return loss


def main() -> None:
    moments, loss = kill_moments(os.environ), heartbeat_loss(os.environ)
    rng = random.Random()
    run_agent_command(
        transport_seam=(lambda t: LossyHeartbeats(t, loss, rng)) if loss else None,
        hardware_seam=(lambda h: PowerLossAt(h, moments)) if moments else None,
    )


if __name__ == "__main__":
    main()
