"""Label selectors: the one parser and matcher used wherever devices are chosen by labels.

Syntax (the Kubernetes set-based selector language)::

    region=eu               label equals value (also `==`)
    tier!=gold              label differs from value, or is absent
    tier in (a,b)           label is one of the values
    tier notin (a,b)        label is none of the values, or is absent
    gpu                     label exists
    !canary                 label does not exist

Requirements are joined by commas and all must hold; the empty selector matches everything.

>>> parse_selector("region=eu,tier in (a,b),!canary").matches({"region": "eu", "tier": "a"})
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.labels import validate_label_key, validate_label_value
from edgefleet.errors import InvalidInput, SelectorSyntaxError

MAX_SELECTOR_LENGTH = 4096


class SelectorOp(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: SelectorOp
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case SelectorOp.EQUALS | SelectorOp.IN:
                return present and value in self.values
            case SelectorOp.NOT_EQUALS | SelectorOp.NOT_IN:
                return not present or value not in self.values
            case SelectorOp.EXISTS:
                return present
            case SelectorOp.NOT_EXISTS:
                return not present

    def __str__(self) -> str:
        match self.op:
            case SelectorOp.EQUALS | SelectorOp.NOT_EQUALS:
                return f"{self.key}{self.op}{self.values[0]}"
            case SelectorOp.IN | SelectorOp.NOT_IN:
                return f"{self.key} {self.op} ({','.join(self.values)})"
            case SelectorOp.EXISTS:
                return self.key
            case SelectorOp.NOT_EXISTS:
                return f"!{self.key}"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when every requirement holds for `labels`."""
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_TOKEN_RE = re.compile(r"\s*(?:(==|!=|=|\(|\)|,|!)|([A-Za-z0-9._/-]+))")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise SelectorSyntaxError(
                f"invalid selector {text!r}: unexpected character {bad!r} at {pos}"
            )
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self, what: str) -> SelectorSyntaxError:
        got = self.tokens[self.pos] if self.pos < len(self.tokens) else "end of input"
        return SelectorSyntaxError(f"invalid selector {self.text!r}: expected {what}, got {got!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def word(self, what: str) -> str:
        tok = self.peek()
        if tok is None or not _is_word(tok):
            raise self.fail(what)
        return self.take()

    def key(self) -> str:
        key = self.word("a label key")
        try:
            return validate_label_key(key)
        except InvalidInput as e:
            raise SelectorSyntaxError(f"invalid selector {self.text!r}: {e.message}") from None

    def value(self, key: str) -> str:
        tok = self.peek()
        raw = "" if tok is None or tok in (",", ")") else self.word("a label value")
        try:
            return validate_label_value(key, raw)
        except InvalidInput as e:
            raise SelectorSyntaxError(f"invalid selector {self.text!r}: {e.message}") from None

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(self.key(), SelectorOp.NOT_EXISTS)
        key = self.key()
        tok = self.peek()
        if tok is None or tok == ",":
            return Requirement(key, SelectorOp.EXISTS)
        if tok in ("=", "=="):
            self.take()
            return Requirement(key, SelectorOp.EQUALS, (self.value(key),))
        if tok == "!=":
            self.take()
            return Requirement(key, SelectorOp.NOT_EQUALS, (self.value(key),))
        if tok in ("in", "notin"):
            self.take()
            return Requirement(key, SelectorOp(tok), self.value_set(key))
        raise self.fail("'=', '!=', 'in', 'notin' or ','")

    def value_set(self, key: str) -> tuple[str, ...]:
        if self.peek() != "(":
            raise self.fail("'('")
        self.take()
        values = [self.value(key)]
        while self.peek() == ",":
            self.take()
            values.append(self.value(key))
        if self.peek() != ")":
            raise self.fail("',' or ')'")
        self.take()
        return tuple(sorted(set(values)))

    def selector(self) -> Selector:
        if not self.tokens:
            return Selector()
        requirements = [self.requirement()]
        while self.peek() == ",":
            self.take()
            requirements.append(self.requirement())
        if self.peek() is not None:
            raise self.fail("',' or end of selector")
        return Selector(tuple(requirements))


def _is_word(token: str) -> bool:
    return token not in ("==", "!=", "=", "(", ")", ",", "!")


def parse_selector(text: str) -> Selector:
    """Parse a selector string; raise SelectorSyntaxError with the position of the fault."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorSyntaxError(f"selector is longer than {MAX_SELECTOR_LENGTH} characters")
    return _Parser(text).selector()
