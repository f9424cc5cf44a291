"""Proxy settings from the environment: which variable wins, NO_PROXY matching, loopback,
credentials, and malformed settings refused with the variable named."""

from __future__ import annotations

import doctest
import re

import pytest

from edgefleet.errors import SettingsError
from edgefleet.transport import http_proxy
from edgefleet.transport.http_proxy import ProxySettings
from edgefleet.transport.http_wire import Framing, Origin, build_response_head

PROXY = "http://proxy.lan:3128"


def proxied(settings: ProxySettings, url_origin: Origin) -> str | None:
    proxy = settings.for_origin(url_origin)
    return None if proxy is None else proxy.origin.authority


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(http_proxy).failed == 0


def test_each_scheme_uses_its_own_variable() -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": PROXY, "HTTP_PROXY": "http://other:8080"})
    assert proxied(settings, Origin("https", "fleet.example", 443)) == "proxy.lan:3128"
    assert proxied(settings, Origin("http", "fleet.example", 80)) == "other:8080"
    assert proxied(ProxySettings.from_environ({}), Origin("https", "fleet.example", 443)) is None
    only_https = ProxySettings.from_environ({"HTTPS_PROXY": PROXY})
    assert proxied(only_https, Origin("http", "fleet.example", 80)) is None


def test_lowercase_wins_and_blank_means_unset() -> None:
    environ = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    settings = ProxySettings.from_environ(environ)
    assert proxied(settings, Origin("https", "a.example", 443)) == "lower:1"
    settings = ProxySettings.from_environ({"https_proxy": " ", "HTTPS_PROXY": "http://upper:2"})
    assert proxied(settings, Origin("https", "a.example", 443)) == "upper:2"


def test_a_bare_host_port_is_an_http_proxy_on_port_80_by_default() -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": "proxy.lan"})
    assert proxied(settings, Origin("https", "a.example", 443)) == "proxy.lan"
    assert settings.https is not None and settings.https.origin.port == 80


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "a.b.example.com", 443, True),
        ("EXAMPLE.com", "api.example.COM", 443, True),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.0.0.0/8", "10.20.30.40", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),
        ("192.168.1.7", "192.168.1.7", 443, True),
        ("[fd00::1]:443", "fd00::1", 443, True),
        ("fd00::/8", "fd00::99", 443, True),
        ("other.example, *", "anything.example", 443, True),
        (" a.example , , b.example ", "b.example", 443, True),
        ("", "fleet.example", 443, False),
    ],
)
def test_no_proxy_entries(no_proxy: str, host: str, port: int, direct: bool) -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy})
    assert (settings.for_origin(Origin("https", host, port)) is None) is direct


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST."])
def test_loopback_never_goes_through_a_proxy(host: str) -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": PROXY, "HTTP_PROXY": PROXY})
    assert settings.for_origin(Origin("http", host, 8080)) is None
    assert settings.for_origin(Origin("https", host, 443)) is None


def test_http_proxy_is_ignored_in_a_cgi_environment() -> None:
    # httpoxy: a CGI request's "Proxy:" header arrives as HTTP_PROXY.
    settings = ProxySettings.from_environ({"HTTP_PROXY": PROXY, "REQUEST_METHOD": "GET"})
    assert settings.http is None


def test_credentials_become_a_basic_proxy_authorization() -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": "http://edge%40site:s%3Acret@proxy:3128"})
    assert settings.https is not None
    # base64("edge@site:s:cret")
    assert settings.https.headers() == {"proxy-authorization": "Basic ZWRnZUBzaXRlOnM6Y3JldA=="}
    plain = ProxySettings.from_environ({"HTTPS_PROXY": PROXY}).https
    assert plain is not None and plain.headers() == {}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HTTPS_PROXY": "https://proxy:3128"}, "bad proxy in HTTPS_PROXY: https:// proxies"),
        ({"https_proxy": "socks5://proxy:1080"}, "bad proxy in https_proxy: socks5://"),
        ({"HTTP_PROXY": "http://proxy:99999"}, "bad proxy in HTTP_PROXY: Port out of range"),
        ({"HTTP_PROXY": "http://proxy:3128/path"}, "a proxy URL has no path or query"),
        ({"HTTP_PROXY": "http://:3128"}, "it names no host"),
        ({"NO_PROXY": "10.0.0.0/33", "HTTP_PROXY": PROXY}, "bad entry '10.0.0.0/33' in NO_PROXY"),
        ({"no_proxy": "example.com:http"}, "bad entry 'example.com:http' in no_proxy: bad port"),
        ({"NO_PROXY": "*."}, "bad entry '*.' in NO_PROXY: no host"),
    ],
)
def test_malformed_settings_are_refused_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        ProxySettings.from_environ(environ)


def test_a_connect_success_has_no_body_to_read() -> None:
    head = build_response_head(("1.1", 200, "Connection established"), [], "CONNECT")
    assert head.framing is Framing.NONE
    refused = build_response_head(("1.1", 407, "Proxy Auth"), [("content-length", "5")], "CONNECT")
    assert refused.length == 5


def test_the_description_for_the_log_never_shows_credentials() -> None:
    settings = ProxySettings.from_environ(
        {"HTTPS_PROXY": "http://edge:s3cret@proxy:3128", "NO_PROXY": "a.example,10.0.0.0/8"}
    )
    assert settings.describe() == {
        "https": "proxy:3128 (with credentials)",
        "http": "direct",
        "no_proxy": "2",
    }
