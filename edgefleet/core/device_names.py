"""Device names: what operators call a device, one device per name.

A name is NFC-normalized text of 1 to 128 characters with no hidden characters (controls,
zero-width and bidi formatting, line separators: `core.hidden_characters`) and no
whitespace at either end, so two names that look alike are the same string and a name
shows as what it is. At most one device that is not revoked holds a name; revoking a device
frees its name for a device re-enrolled with a new key.

Databases from before these rules may hold names that break them: `plan_device_renames`
decides the renames that repair them (the migration applies and audits them).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.core.hidden_characters import describe_character, first_hidden, is_hidden
from edgefleet.errors import InvalidInput

MAX_DEVICE_NAME_CHARS = 128


def normalize_device_name(text: str) -> str:
    """The form names are stored and compared in (NFC)."""
    return unicodedata.normalize("NFC", text)


def validate_device_name(name: str) -> str:
    """`name` in NFC, or InvalidInput (code `invalid_device_name`) saying what is wrong.

    >>> validate_device_name("Cafe\\u0301-1")
    'Café-1'
    """
    normal = normalize_device_name(name)
    problem = None
    if not normal:
        problem = "it is empty"
    elif len(normal) > MAX_DEVICE_NAME_CHARS:
        problem = f"it has {len(normal)} characters (at most {MAX_DEVICE_NAME_CHARS})"
    elif (hidden := first_hidden(normal)) is not None:
        problem = (
            f"it contains {describe_character(hidden)}: control, zero-width and bidi "
            "characters are not allowed"
        )
    elif normal != normal.strip():
        problem = "it starts or ends with whitespace"
    if problem is not None:
        raise InvalidInput(f"invalid device name {name!r}: {problem}", code="invalid_device_name")
    return normal


def repair_device_name(name: str, device_id: str) -> str:
    """The legal name closest to `name`: NFC, hidden characters dropped, outer whitespace
    stripped, cut to the maximum length; the device id when nothing is left."""
    kept = "".join(c for c in normalize_device_name(name) if not is_hidden(c))
    repaired = normalize_device_name(kept).strip()[:MAX_DEVICE_NAME_CHARS].rstrip()
    return repaired or device_id


@dataclass(frozen=True)
class NamedDevice:
    """What renaming needs to know of a stored device."""

    id: str
    name: str
    revoked: bool


@dataclass(frozen=True)
class DeviceRename:
    device_id: str
    old_name: str
    new_name: str
    reason: str


def plan_device_renames(devices: Sequence[NamedDevice]) -> list[DeviceRename]:
    """The renames that make every name legal and each name held by one device that is not
    revoked. `devices` come oldest first: the oldest keeps a name, later ones get the first
    free `NAME-2`, `NAME-3`, ... (revoked devices may share a name and keep it).

    >>> [r.new_name for r in plan_device_renames(
    ...     [NamedDevice("d-1", "cam", False), NamedDevice("d-2", "cam ", False)])]
    ['cam-2']
    """
    repaired = [(device, repair_device_name(device.name, device.id)) for device in devices]
    taken = {name for _, name in repaired}
    held: dict[str, str] = {}  # name -> the device that is not revoked holding it
    renames: list[DeviceRename] = []
    for device, name in repaired:
        reasons = [] if name == device.name else ["not a legal device name"]
        if not device.revoked:
            if name in held:
                reasons.append(f"the name was already held by {held[name]}")
                name = _free_variant(name, taken)
                taken.add(name)
            held[name] = device.id
        if reasons:
            renames.append(DeviceRename(device.id, device.name, name, "; ".join(reasons)))
    return renames


def _free_variant(name: str, taken: set[str]) -> str:
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = name[: MAX_DEVICE_NAME_CHARS - len(suffix)].rstrip() + suffix
        if candidate not in taken:
            return candidate
        number += 1
