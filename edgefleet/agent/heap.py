"""The agent's heap: hand freed memory back to the operating system now and then.

CPython frees small objects into its own arenas and larger ones through the C library's
malloc, which keeps freed pages for reuse. After start-up, an install or a burst of
telemetry the long-running agent would otherwise keep that high-water mark resident for
good; glibc's `malloc_trim(0)` returns the free pages (2-3 MB in an idle agent,
`bench/agent/idle.py`). A trim of the agent's small heap takes well under a millisecond,
so it runs every minute rather than being tied to the events that churn memory. Elsewhere
(musl, macOS) there is nothing to call and nothing is done. Only the real agent process
does this: the simulator's many agents share one heap.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 60.0
FIRST_TRIM_S = 10.0  # after start-up's imports and the first exchanges


def trim_heap() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


async def trim_heap_forever() -> None:
    """Trim shortly after start, then every minute."""
    await asyncio.sleep(FIRST_TRIM_S)
    while True:
        if not trim_heap():
            log.debug("malloc_trim is not available here; heap not trimmed")
            return
        await asyncio.sleep(TRIM_INTERVAL_S)
