"""The control plane's TLS: serving https, and mutual TLS with device certificates.

uvicorn verifies a client certificate against `client_ca` during the handshake, but does not
hand it to the app. `with_peer_certificate` wraps uvicorn's HTTP protocol so that every
request of a connection whose client presented a certificate carries it in the ASGI scope,
as the ASGI TLS extension describes (`extensions.tls.client_cert_chain`, PEM);
`peer_certificate` reads it back for `server/auth.py`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from edgefleet.errors import SettingsError
from edgefleet.server.settings import ServerSettings


class _WithPeerCertificate:
    """The app, for one connection whose client presented `pem`."""

    def __init__(self, app: ASGIApp, pem: str) -> None:
        self._app = app
        self._pem = pem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {"client_cert_chain": [self._pem]}
        await self._app({**scope, "extensions": extensions}, receive, send)


def with_peer_certificate(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP `protocol`, passing the client's certificate to the app."""

    class PeerCertificateProtocol(protocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der:
                pem = ssl.DER_cert_to_PEM_cert(der)
                self.app = _WithPeerCertificate(self.app, pem)  # type: ignore[has-type]

    return PeerCertificateProtocol


def peer_certificate(request: Request) -> bytes | None:
    """The DER client certificate the TLS handshake verified, or None."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain")
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def uvicorn_tls_options(settings: ServerSettings) -> dict[str, Any]:
    """The uvicorn.Config options of the TLS settings ({} to serve plain http)."""
    if settings.tls_cert is None:
        if settings.tls_key is not None or settings.client_ca is not None:
            raise SettingsError("bad setting tls_cert (--tls-cert / EDGEFLEET_TLS_CERT): "
                                "tls_key and client_ca need it")  # fmt: skip
        return {}
    for key in ("tls_cert", "tls_key", "client_ca"):
        path = getattr(settings, key)
        if key == "tls_key" and path is None:
            raise SettingsError("bad setting tls_key (--tls-key / EDGEFLEET_TLS_KEY): "
                                "required with tls_cert")  # fmt: skip
        if path is not None and not path.is_file():
            raise SettingsError(f"bad setting {key} (--{key.replace('_', '-')} / "
                                f"EDGEFLEET_{key.upper()}): {path} is not a file")  # fmt: skip
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
    }
    if settings.client_ca is not None:
        options |= {
            "ssl_ca_certs": str(settings.client_ca),
            # Optional: operators and devices that sign their requests connect without one.
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "http": with_peer_certificate(AutoHTTPProtocol),
        }
    return options
