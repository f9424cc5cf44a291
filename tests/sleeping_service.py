"""A release service for tests that watch an agent keep running it: it sleeps until
stopped, is healthy while it runs, and its slot on the command line tells whose it is."""

from __future__ import annotations

from pathlib import Path

from edgefleet.localfleet import AgentProcess

SERVICE = {"command": ["{python}", "-c", "import time; time.sleep(86400)", "{slot}"],
           "health": {"command": ["{python}", "-c", "pass"], "window_s": 1,
                      "interval_s": 0.5}}  # fmt: skip


def service_pids(agent: AgentProcess) -> set[int]:
    """The processes of the release service the agent runs (found by its slot's path)."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if any(w.startswith(str(agent.data_dir).encode()) for w in words) and any(
            b"time.sleep" in w for w in words
        ):
            pids.add(int(cmdline.parent.name))
    return pids
