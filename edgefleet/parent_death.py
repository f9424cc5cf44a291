"""Dying with the parent: a child process asks the kernel to SIGKILL it when the thread
that started it ends (Linux's PR_SET_PDEATHSIG), so a killed server or agent leaves no
worker behind. Elsewhere there is no such call and the callers watch their parent instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def death_signal_setter() -> Callable[[], None] | None:
    """A function that arms SIGKILL-on-parent-death for the calling process, or None where
    the platform has none. Load it before forking: the function itself only makes the
    system call, which is what a pre-exec hook in a process with threads may do."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return arm
