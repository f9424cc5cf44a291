"""Labels: the key=value pairs that describe a device and that selectors match.

Keys look like `region`, `tier` or `example.com/rack` (an optional DNS-style prefix and a
name); values are short tokens. Both follow the Kubernetes rules so that selectors written
for one system read the same here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefleet.errors import InvalidInput

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?"
KEY_RE = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
VALUE_RE = re.compile(rf"(?:{_NAME})?")
MAX_LABELS = 64


def validate_label_key(key: str) -> str:
    """Return `key` if it is a legal label key, else raise InvalidInput naming it."""
    if not KEY_RE.fullmatch(key):
        raise InvalidInput(
            f"invalid label key {key!r}: use letters, digits, '-', '_', '.', "
            "at most 63 characters, optionally prefixed by 'domain/'"
        )
    return key


def validate_label_value(key: str, value: str) -> str:
    """Return `value` if it is a legal value for `key`, else raise InvalidInput."""
    if not VALUE_RE.fullmatch(value):
        raise InvalidInput(
            f"invalid value {value!r} for label {key!r}: use letters, digits, '-', '_', '.', "
            "at most 63 characters, starting and ending with a letter or digit"
        )
    return value


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Check every key and value of a label map; return it as a plain dict."""
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"too many labels: {len(labels)} (at most {MAX_LABELS})")
    return {validate_label_key(k): validate_label_value(k, v) for k, v in labels.items()}


@dataclass(frozen=True)
class LabelChange:
    """Labels to set and keys to remove, as written on a command line (`k=v`, `k-`)."""

    set: Mapping[str, str]
    remove: frozenset[str]

    def apply(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels after this change, validated."""
        merged = {k: v for k, v in labels.items() if k not in self.remove}
        merged.update(self.set)
        return validate_labels(merged)


def make_label_change(to_set: Mapping[str, str], to_remove: Iterable[str]) -> LabelChange:
    """A validated change; a key may not be both set and removed."""
    checked = {validate_label_key(k): validate_label_value(k, v) for k, v in to_set.items()}
    removed = frozenset(validate_label_key(k) for k in to_remove)
    both = removed & checked.keys()
    if both:
        raise InvalidInput(f"label {sorted(both)[0]!r} is both set and removed")
    return LabelChange(set=checked, remove=removed)


def parse_label_change(args: Iterable[str]) -> LabelChange:
    """Parse `k=v` (set) and `k-` (remove) arguments, kubectl style.

    >>> parse_label_change(["tier=edge", "canary-"]).remove
    frozenset({'canary'})
    """
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    for arg in args:
        if "=" in arg:
            key, value = arg.split("=", 1)
            to_set[key.strip()] = value.strip()
        elif arg.endswith("-") and len(arg) > 1:
            to_remove.append(arg[:-1])
        else:
            raise InvalidInput(f"invalid label argument {arg!r}: expected key=value or key-")
    return make_label_change(to_set, to_remove)


def parse_label_assignments(args: Iterable[str]) -> dict[str, str]:
    """Parse `k=v` arguments into a validated label map (no removals allowed)."""
    change = parse_label_change(args)
    if change.remove:
        raise InvalidInput(f"cannot remove label {sorted(change.remove)[0]!r} here")
    return dict(change.set)
