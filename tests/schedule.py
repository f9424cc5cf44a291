"""The order test modules run in: the longest first, so `make test`'s workers end together.

`make test` runs modules side by side (pytest-xdist, `--dist loadfile`), handing the next
module in collection order to whichever worker frees up. A long module handed out last sets
the suite's end while the other workers sit idle; handed out first, it runs while the short
ones fill the other workers (longest processing time first). xdist's own reordering, by
number of tests, put the modules with a few long scenarios last, hence
`--no-loadscope-reorder` in the Makefile.

The seconds come from `module_seconds.txt` (a module's wall time in a full `make test`);
a module not listed keeps its collection place after the listed ones. To refresh the list:

    pytest -n 3 --dist loadfile --no-loadscope-reorder --module-seconds-out=/tmp/seconds.jsonl
    python -m tests.schedule /tmp/seconds.jsonl > tests/module_seconds.txt
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

MODULE_SECONDS = Path(__file__).with_name("module_seconds.txt")


def read_module_seconds(path: Path = MODULE_SECONDS) -> dict[str, float]:
    """`seconds module-path` lines (`#` starts a comment) as {module path: seconds}."""
    seconds: dict[str, float] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            value, module = line.split(maxsplit=1)
            seconds[module] = float(value)
    return seconds


def module_of(nodeid: str) -> str:
    """tests/unit/test_x.py::test_y[1] -> tests/unit/test_x.py"""
    return nodeid.split("::", 1)[0]


def longest_modules_first(nodeids: Sequence[str], seconds: dict[str, float]) -> list[int]:
    """Indexes of `nodeids` with whole modules in decreasing `seconds`; the tests of a module
    keep their order, and so do modules of equal (or unknown, 0) seconds.

    >>> longest_modules_first(["a.py::t1", "b.py::t1", "a.py::t2"], {"b.py": 9.0})
    [1, 0, 2]
    """
    first_seen: dict[str, int] = {}
    for nodeid in nodeids:
        first_seen.setdefault(module_of(nodeid), len(first_seen))

    def key(index: int) -> tuple[float, int]:
        module = module_of(nodeids[index])
        return -seconds.get(module, 0.0), first_seen[module]

    return sorted(range(len(nodeids)), key=key)


def summarise(records: Iterable[str]) -> list[tuple[float, str]]:
    """(seconds, module) from the recorder's lines, longest first; a module's seconds span
    its first test's start to its last test's end (its fixtures included)."""
    spans: dict[str, tuple[float, float]] = {}
    for line in records:
        nodeid, start, end = json.loads(line)
        module = module_of(nodeid)
        first, last = spans.get(module, (start, end))
        spans[module] = (min(first, start), max(last, end))
    return sorted(((end - start, m) for m, (start, end) in spans.items()), reverse=True)


if __name__ == "__main__":
    print("# seconds module — each module's wall time in one full run (tests/schedule.py)")
    for value, module in summarise(Path(sys.argv[1]).read_text().splitlines()):
        print(f"{value:.0f} {module}")
