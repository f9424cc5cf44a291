"""Which optional part of edgefleet (a pip extra: `server`, `agent`, ...) brings a package,
so that a command run in an install without it can say what to install instead of failing
with `ModuleNotFoundError`.

The answer comes from the installed distribution's own metadata (its `Requires-Dist`
lines), so it follows pyproject.toml without a second list to keep in step. Standard library
only: the lean agent process uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata

from edgefleet.errors import EdgefleetError

DISTRIBUTION = "edgefleet"
# Extras that only gather others (or development tools): never the one to suggest.
_AGGREGATES = frozenset({"dev"})
# Import names that differ from their distribution's name.
_DISTRIBUTION_OF_MODULE = {"yaml": "pyyaml"}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_providing(module: str, requirements: Iterable[str]) -> list[str] | None:
    """The extras whose requirements bring the top-level package of `module` (`[]` when the
    base install does), or None when no install of edgefleet needs it (development tools).

    >>> extras_providing("uvicorn.config", ['uvicorn>=0.29; extra == "server"'])
    ['server']
    """
    wanted = _normalized(module.partition(".")[0])
    wanted = _DISTRIBUTION_OF_MODULE.get(wanted, wanted)
    extras: list[str] = []
    found = False
    for line in requirements:
        name = _NAME.match(line)
        if name is None or _normalized(name.group(1)) != wanted:
            continue
        extra = _EXTRA.search(line)
        if extra is None:
            return []
        if extra.group(1) not in _AGGREGATES:
            found = True
            if extra.group(1) not in extras:
                extras.append(extra.group(1))
    return sorted(extras) if found else None


def missing_dependency(
    error: ModuleNotFoundError, command: str, prefer: str
) -> EdgefleetError | None:
    """The error to show for `error` in `command` (`this command`, `edgefleet agent`): which
    extra to install, `prefer` (the extra of the program running) when it brings the
    package. None when the missing module is none of edgefleet's dependencies (a bug, not an
    install without an extra)."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    module = error.name or ""
    extras = extras_providing(module, requirements) if module else None
    if extras is None:
        return None
    if prefer in extras:
        extras = [prefer]
    package = module.partition(".")[0]
    if extras:
        install = " or ".join(f"pip install '{DISTRIBUTION}[{extra}]'" for extra in extras)
    else:
        install = f"pip install --force-reinstall {DISTRIBUTION}"
    return EdgefleetError(f"{command} needs the Python package {package!r}, which this "
                          f"install lacks: {install}", code="missing_dependency")  # fmt: skip
