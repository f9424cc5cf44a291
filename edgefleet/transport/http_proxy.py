"""Forward proxies for the agent's HTTP client, from the conventional environment variables.

    HTTPS_PROXY / https_proxy   the proxy for https:// URLs (a CONNECT tunnel; TLS to the
                                control plane runs end to end through it)
    HTTP_PROXY / http_proxy     the proxy for http:// URLs (requests in absolute form)
    NO_PROXY / no_proxy         comma-separated exceptions: `*` (everything), host names
                                (`example.com` also matches `api.example.com`; a leading
                                dot or `*.` means the same), IP addresses, CIDR blocks
                                (`10.0.0.0/8`), each optionally with `:port`

The lowercase variable wins when both are set, as in curl. `HTTP_PROXY` is ignored when
`REQUEST_METHOD` is set (a CGI environment, where a client's `Proxy:` header would become
it: "httpoxy"). Loopback addresses and `localhost` never go through a proxy: the agent's
probes of its own workloads stay on the device. A proxy is an `http://` URL, optionally
with `user:password@` (sent as `Proxy-Authorization: Basic`); anything else is a
SettingsError naming the variable.

    >>> settings = ProxySettings.from_environ({"HTTPS_PROXY": "http://proxy:3128",
    ...                                        "NO_PROXY": ".internal,10.0.0.0/8"})
    >>> settings.for_origin(Origin("https", "api.example.com", 443)).origin.authority
    'proxy:3128'
    >>> settings.for_origin(Origin("https", "cp.internal", 443)) is None
    True
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from edgefleet.errors import SettingsError
from edgefleet.transport.http_wire import Origin

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class Proxy:
    origin: Origin  # where the connection goes (always plain http)
    authorization: str | None = None  # the Proxy-Authorization value, if any

    def headers(self) -> dict[str, str]:
        return {} if self.authorization is None else {"proxy-authorization": self.authorization}


@dataclass(frozen=True)
class _Exception:
    """One NO_PROXY entry."""

    host: str = ""  # a lowercase name suffix, or "" for a network
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, origin: Origin) -> bool:
        if self.port is not None and self.port != origin.port:
            return False
        if self.network is not None:
            address = _ip(origin.host)
            return address is not None and address in self.network
        host = origin.host.lower().rstrip(".")
        return host == self.host or host.endswith("." + self.host)


@dataclass(frozen=True)
class ProxySettings:
    http: Proxy | None = None
    https: Proxy | None = None
    every_host_excepted: bool = False
    exceptions: tuple[_Exception, ...] = field(default=())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxySettings:
        """The settings the variables describe; SettingsError on a malformed one."""

        def variable(name: str) -> tuple[str, str] | None:
            for key in (name.lower(), name.upper()):
                value = environ.get(key, "").strip()
                if value:
                    return key, value
            return None

        http = variable("http_proxy")
        if http is not None and environ.get("REQUEST_METHOD"):
            http = None
        https = variable("https_proxy")
        excepted, exceptions = False, []
        no_proxy = variable("no_proxy")
        for entry in (no_proxy[1] if no_proxy else "").split(","):
            entry = entry.strip()
            if entry == "*":
                excepted = True
            elif entry:
                exceptions.append(_parse_exception(no_proxy[0] if no_proxy else "", entry))
        return cls(
            http=None if http is None else _parse_proxy(*http),
            https=None if https is None else _parse_proxy(*https),
            every_host_excepted=excepted,
            exceptions=tuple(exceptions),
        )

    def describe(self) -> dict[str, str]:
        """For the log: where each scheme goes and the exceptions, never the credentials."""

        def where(proxy: Proxy | None) -> str:
            if proxy is None:
                return "direct"
            return proxy.origin.authority + (" (with credentials)" if proxy.authorization else "")

        exceptions = "*" if self.every_host_excepted else str(len(self.exceptions))
        return {"https": where(self.https), "http": where(self.http), "no_proxy": exceptions}

    @property
    def configured(self) -> bool:
        """Whether any request could go through a proxy."""
        return self.http is not None or self.https is not None

    def for_origin(self, origin: Origin) -> Proxy | None:
        """The proxy a request to `origin` goes through, or None for a direct connection."""
        proxy = self.https if origin.tls else self.http
        if proxy is None or self.every_host_excepted or _is_loopback(origin.host):
            return None
        if any(e.matches(origin) for e in self.exceptions):
            return None
        return proxy


def _parse_proxy(variable: str, url: str) -> Proxy:
    def bad(reason: str) -> SettingsError:
        return SettingsError(f"bad proxy in {variable}: {reason}")

    if "://" not in url:
        url = f"http://{url}"  # curl's reading of a bare host:port
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise bad(str(e)) from None
    if parts.scheme.lower() != "http":
        raise bad(f"{parts.scheme}:// proxies are not supported (use an http:// proxy URL)")
    if not parts.hostname:
        raise bad("it names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("a proxy URL has no path or query")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(Origin("http", parts.hostname, port or 80), authorization)


def _parse_exception(variable: str, entry: str) -> _Exception:
    host, port = entry, None
    if entry.startswith("["):  # [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":"):
            port = _port(variable, entry, rest[1:])
    elif entry.count(":") == 1:
        host, text = entry.split(":")
        port = _port(variable, entry, text)
    if "/" in host:
        try:
            return _Exception(network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            raise SettingsError(f"bad entry {entry!r} in {variable}: not a CIDR block") from None
    address = _ip(host)
    if address is not None:
        return _Exception(network=ipaddress.ip_network(address), port=port)
    name = host.lower().removeprefix("*").lstrip(".").rstrip(".")
    if not name:
        raise SettingsError(f"bad entry {entry!r} in {variable}: no host")
    return _Exception(host=name, port=port)


def _port(variable: str, entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"bad entry {entry!r} in {variable}: bad port")
    return int(text)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    address = _ip(host)
    return address is not None and address.is_loopback
