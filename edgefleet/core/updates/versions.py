"""Versions: SemVer 2.0 parsing and precedence, and specifiers that match versions.

A `Version` follows https://semver.org: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`. Build
metadata is kept but ignored by equality and ordering, as the spec's precedence rules say,
so `1.0.0+a == 1.0.0+b`.

A `VersionSpecifier` is a comma-separated list of clauses that must all hold::

    >=1.17          at least 1.17.0
    >=1.17,<2       1.17.0 up to, not including, 2.0.0 and its pre-releases
    ==1.2.*         any 1.2.x (pre-releases included)
    !=1.3.0         anything but 1.3.0
    ~=1.17          compatible release: >=1.17.0 and ==1.*
    (empty)         any version

Versions in specifiers, and versions reported by devices (`onnxruntime 1.17`), may leave
out trailing components: `parse_loose_version` pads them with zeros. A `<V` clause where V
has no pre-release also excludes V's pre-releases (`<2` refuses `2.0.0-rc.1`), because
"below 2" never means "the 2.0 release candidate".

>>> parse_package_requirement("onnxruntime>=1.17,<2").matches(parse_loose_version("1.18"))
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import total_ordering

from edgefleet.errors import InvalidInput

_NUMERIC = r"0|[1-9]\d*"
_IDENTIFIER = r"[0-9A-Za-z-]+"
_SEMVER_RE = re.compile(
    rf"(?P<major>{_NUMERIC})\.(?P<minor>{_NUMERIC})\.(?P<patch>{_NUMERIC})"
    rf"(?:-(?P<pre>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?"
    rf"(?:\+(?P<build>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?"
)
_LOOSE_RE = re.compile(
    r"v?(?P<release>\d+(?:\.\d+){0,2})"
    rf"(?:-(?P<pre>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?"
    rf"(?:\+(?P<build>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?"
)
_PACKAGE_RE = re.compile(r"\s*(?P<name>[A-Za-z][A-Za-z0-9._-]*)\s*(?P<spec>.*)")
_CLAUSE_RE = re.compile(r"\s*(?P<op>~=|==|!=|>=|<=|>|<)\s*(?P<version>[^\s,]+)\s*")
MAX_VERSION_LENGTH = 256


@total_ordering
@dataclass(frozen=True)
class Version:
    """A SemVer 2.0 version; compares by precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if min(self.major, self.minor, self.patch) < 0:
            raise InvalidInput(f"version components must not be negative: {self}")
        for ident in self.prerelease:
            _check_prerelease_identifier(ident, str(self))

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _precedence_key(self) -> tuple[object, ...]:
        # A release ranks above its pre-releases; numeric identifiers rank below
        # alphanumeric ones; a shorter identifier list ranks below a longer one it prefixes.
        pre = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if pre else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence_key() < other._precedence_key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def _check_prerelease_identifier(ident: str, text: str) -> None:
    if not ident or not re.fullmatch(_IDENTIFIER, ident):
        raise InvalidInput(f"invalid version {text!r}: bad pre-release identifier {ident!r}")
    if ident.isdigit() and len(ident) > 1 and ident.startswith("0"):
        raise InvalidInput(
            f"invalid version {text!r}: numeric identifier {ident!r} has a leading zero"
        )


def _split(part: str | None) -> tuple[str, ...]:
    return tuple(part.split(".")) if part else ()


def parse_version(text: str) -> Version:
    """Parse a strict SemVer 2.0 version such as `1.4.0-rc.1+build.7`."""
    if len(text) > MAX_VERSION_LENGTH:
        raise InvalidInput(f"version is longer than {MAX_VERSION_LENGTH} characters")
    m = _SEMVER_RE.fullmatch(text)
    if m is None:
        raise InvalidInput(f"invalid version {text!r}: expected MAJOR.MINOR.PATCH (SemVer 2.0)")
    return Version(
        int(m["major"]),
        int(m["minor"]),
        int(m["patch"]),
        _split(m["pre"]),
        _split(m["build"]),
    )


def parse_loose_version(text: str) -> Version:
    """Parse a version that may lack trailing components or carry a `v`: `1.17` -> 1.17.0."""
    return _parse_loose(text)[0]


def _parse_loose(text: str) -> tuple[Version, int]:
    """The version and how many release components the text spelled out."""
    if len(text) > MAX_VERSION_LENGTH:
        raise InvalidInput(f"version is longer than {MAX_VERSION_LENGTH} characters")
    m = _LOOSE_RE.fullmatch(text.strip())
    if m is None:
        raise InvalidInput(f"invalid version {text!r}: expected digits like 1.17 or 1.17.2")
    parts = [int(p) for p in m["release"].split(".")]
    given = len(parts)
    parts += [0] * (3 - given)
    return Version(parts[0], parts[1], parts[2], _split(m["pre"]), _split(m["build"])), given


class ClauseOp(StrEnum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    AT_LEAST = ">="
    AT_MOST = "<="
    ABOVE = ">"
    BELOW = "<"
    COMPATIBLE = "~="


@dataclass(frozen=True)
class VersionClause:
    """One comparison; `wildcard` marks `==1.2.*`, `given` counts the spelled components."""

    op: ClauseOp
    version: Version
    given: int = 3
    wildcard: bool = False

    def matches(self, candidate: Version) -> bool:
        if self.wildcard:
            same = candidate.release[: self.given] == self.version.release[: self.given]
            return same if self.op is ClauseOp.EQUAL else not same
        match self.op:
            case ClauseOp.EQUAL:
                return candidate == self.version
            case ClauseOp.NOT_EQUAL:
                return candidate != self.version
            case ClauseOp.AT_LEAST:
                return candidate >= self.version
            case ClauseOp.AT_MOST:
                return candidate <= self.version
            case ClauseOp.ABOVE:
                return candidate > self.version
            case ClauseOp.BELOW:
                if not self.version.is_prerelease and candidate.release == self.version.release:
                    return False
                return candidate < self.version
            case ClauseOp.COMPATIBLE:
                prefix = max(self.given - 1, 1)
                return (
                    candidate >= self.version
                    and candidate.release[:prefix] == self.version.release[:prefix]
                )

    def __str__(self) -> str:
        release = ".".join(str(p) for p in self.version.release[: self.given])
        if self.wildcard:
            return f"{self.op}{release}.*"
        text = str(self.version)
        if self.given < 3 and not self.version.prerelease and not self.version.build:
            text = release
        return f"{self.op}{text}"


@dataclass(frozen=True)
class VersionSpecifier:
    """Clauses that must all hold; the empty specifier matches every version."""

    clauses: tuple[VersionClause, ...] = ()

    def matches(self, candidate: Version) -> bool:
        return all(c.matches(candidate) for c in self.clauses)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.clauses)


def _parse_clause(text: str, whole: str) -> VersionClause:
    m = _CLAUSE_RE.fullmatch(text)
    if m is None:
        raise InvalidInput(
            f"invalid version specifier {whole!r}: {text.strip()!r} is not "
            "an operator (==, !=, >=, <=, >, <, ~=) followed by a version"
        )
    op = ClauseOp(m["op"])
    raw = m["version"]
    wildcard = raw.endswith(".*")
    if wildcard:
        if op not in (ClauseOp.EQUAL, ClauseOp.NOT_EQUAL):
            raise InvalidInput(f"invalid version specifier {whole!r}: '.*' needs == or !=")
        raw = raw[:-2]
    try:
        version, given = _parse_loose(raw)
    except InvalidInput as e:
        raise InvalidInput(f"invalid version specifier {whole!r}: {e.message}") from None
    if wildcard and (version.prerelease or version.build):
        raise InvalidInput(f"invalid version specifier {whole!r}: a wildcard takes a release")
    return VersionClause(op, version, given, wildcard)


def parse_specifier(text: str) -> VersionSpecifier:
    """Parse `>=1.17,<2`-style specifiers; InvalidInput names the offending clause."""
    if len(text) > MAX_VERSION_LENGTH:
        raise InvalidInput(f"version specifier is longer than {MAX_VERSION_LENGTH} characters")
    if not text.strip():
        return VersionSpecifier()
    return VersionSpecifier(tuple(_parse_clause(part, text) for part in text.split(",")))


@dataclass(frozen=True)
class PackageRequirement:
    """A named package and the versions of it that are acceptable: `onnxruntime>=1.17`."""

    name: str
    specifier: VersionSpecifier = VersionSpecifier()

    def matches(self, candidate: Version) -> bool:
        return self.specifier.matches(candidate)

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


def parse_package_requirement(text: str) -> PackageRequirement:
    """Parse `name[specifier]`, e.g. `onnxruntime>=1.17,<2` or just `onnxruntime`."""
    m = _PACKAGE_RE.fullmatch(text)
    if m is None:
        raise InvalidInput(f"invalid requirement {text!r}: expected a package name")
    return PackageRequirement(m["name"], parse_specifier(m["spec"]))
