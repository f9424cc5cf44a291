"""The delta service's child process: `python -m edgefleet.server.services.delta_child`.

It computes one delta and exits, so the memory creation takes (the onnx package, numpy, two
mapped files) leaves with it. Arguments: the server's pid, then the old file, the new file
and where to write the delta. On success it prints one JSON line to stdout::

    {"delta_size": 1234, "target_size": 56789}

and exits 0; on failure it exits with a traceback on stderr, whose last line is the reason.

The child never outlives the server: on Linux the kernel kills it when the server thread
that started it ends, which a SIGKILL of the server does too (PR_SET_PDEATHSIG); elsewhere,
and for the moment before that is set, it compares its parent's pid with the server's and
exits when they differ. It runs at lower CPU priority and ignores SIGINT and SIGTERM: a
Ctrl-C or a service manager's SIGTERM to the server's process group must not turn into a
failed delta; the server kills it when it stops (`DeltaService.close`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from edgefleet.parent_death import death_signal_setter

MODULE = "edgefleet.server.services.delta_child"
NICENESS = 10
PARENT_CHECK_INTERVAL_S = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the server is gone (see the module docstring)."""
    arm = death_signal_setter()
    if arm is not None:
        arm()
    if os.getppid() != parent_pid:  # the server died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) != 4 or not argv[0].isdigit():
        print(f"usage: python -m {MODULE} SERVER_PID OLD NEW OUT", file=sys.stderr)
        return 2
    _die_with_parent(int(argv[0]))
    os.nice(NICENESS)
    from edgefleet.artifacts.delta import create_delta  # after the watch: imports take time

    old, new, out = (Path(a) for a in argv[1:])
    info = create_delta(old, new, out)
    print(json.dumps({"delta_size": info.delta_size, "target_size": info.target_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
