"""Hidden characters: the ones a reader cannot see, or that act on a terminal instead of
being shown (controls, zero-width and bidi formatting, line and paragraph separators).

Names refuse them (`core.device_names`); the CLI shows them escaped, so a stored string
cannot repaint an operator's terminal or pass for another one.
"""

from __future__ import annotations

import unicodedata

# Cc: C0, DEL, C1. Cf: zero-width (U+200B-U+200D, U+2060, U+FEFF) and bidi controls
# (U+200E, U+200F, U+061C, U+202A-U+202E, U+2066-U+2069), soft hyphen, tags. Cs: lone
# surrogates (JSON can carry them; no encoder stores them). Zl, Zp: U+2028, U+2029.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_hidden(char: str) -> bool:
    """True for a character of a hidden category (see HIDDEN_CATEGORIES)."""
    return unicodedata.category(char) in HIDDEN_CATEGORIES


def first_hidden(text: str) -> str | None:
    """The first hidden character of `text`, or None."""
    return next((c for c in text if is_hidden(c)), None)


def describe_character(char: str) -> str:
    """A character named for an error message (controls have no name, only a number).

    >>> describe_character("\\u202e"), describe_character("\\x1b")
    ('U+202E RIGHT-TO-LEFT OVERRIDE', 'U+001B')
    """
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def escape_hidden(text: str, keep: str = "") -> str:
    """`text` with every hidden character but those in `keep` written as a Python escape
    (`\\x1b`, `\\u202e`, `\\U000e0041`), so it shows instead of acting.

    >>> escape_hidden("cam\\x1b[2J-1\\u202e")
    'cam\\\\x1b[2J-1\\\\u202e'
    """
    if not any(is_hidden(c) and c not in keep for c in text):
        return text
    return "".join(_escaped(c) if is_hidden(c) and c not in keep else c for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
