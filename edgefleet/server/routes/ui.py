"""The web dashboard: its page and assets (`edgefleet/web/`), the session login and logout
that swap an API token for an HttpOnly cookie, and the event stream of fleet changes.

The page is a shell with no data in it; everything it shows comes from the operator API
with the session cookie (`server/auth.py` accepts it in place of a bearer token), so the
dashboard can do exactly what the session's role may and nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from edgefleet.errors import NotFound
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import SESSION_COOKIE, any_operator, no_credentials, requires
from edgefleet.server.composition import Services, services
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.schemas.ui import LoginRequest, SessionInfoOut, SessionOut
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.dashboard_events import TICK_S, changes
from edgefleet.server.services.ui_sessions import SESSION_TTL

router = APIRouter(tags=["dashboard"])

# The page runs only its own scripts and styles and talks only to this origin.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# A stream ends after this long; the browser reconnects at once, and the session is checked
# again (a revoked or expired session stops receiving within this bound).
STREAM_MAX_S = 300.0
KEEPALIVE_S = 15.0
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    root = resources.files("edgefleet.web")

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in _MEDIA_TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                found[prefix + entry.name] = Asset(body, _MEDIA_TYPES[suffix], etag)

    walk(root, "")
    return found


ASSETS = _load_assets()


def _asset_response(name: str, request: Request) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound(f"no dashboard asset {name!r}")
    headers = {**PAGE_HEADERS, "etag": asset.etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get(
    "/ui",
    summary="The web dashboard (a page without data; log in on it)",
    dependencies=[Depends(no_credentials)],
    response_class=Response,
)
def page(request: Request) -> Response:
    return _asset_response("index.html", request)


@router.get(
    "/ui/assets/{name:path}",
    summary="The dashboard's scripts and styles",
    dependencies=[Depends(no_credentials)],
    response_class=Response,
)
def asset(name: str, request: Request) -> Response:
    return _asset_response(name, request)


def _cookie_is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.post(
    "/ui/session",
    status_code=201,
    dependencies=[Depends(no_credentials)],
    summary="Log in: exchange an API token for a session cookie (HttpOnly)",
)
def log_in(body: LoginRequest, request: Request, response: Response,
           svc: Services = Depends(services)) -> SessionOut:  # fmt: skip
    session, secret = svc.ui_sessions.open(body.token.strip(), request_id_of(request))
    max_age = int(SESSION_TTL.total_seconds())
    if session.expires_at is not None:
        max_age = max(0, int((session.expires_at - session.created_at).total_seconds()))
    response.set_cookie(SESSION_COOKIE, secret, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=_cookie_is_secure(request))  # fmt: skip
    response.headers["cache-control"] = "no-store"
    return SessionOut(
        name=session.name,
        role=str(session.role),
        expires_at=session.expires_at.isoformat() if session.expires_at else None,
    )


@router.get("/ui/session", summary="The session's operator, role and permissions")
def session_info(ctx: OperatorContext = Depends(any_operator),
                 svc: Services = Depends(services)) -> SessionInfoOut:  # fmt: skip
    return SessionInfoOut.model_validate(svc.dashboard.session_info(ctx))


@router.delete("/ui/session", status_code=204, summary="Log out: revoke the session")
def log_out(request: Request, ctx: OperatorContext = Depends(any_operator),
            svc: Services = Depends(services)) -> Response:  # fmt: skip
    svc.ui_sessions.close(ctx)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_cookie_is_secure(request))  # fmt: skip
    return response


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(svc: Services) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    started = sent_at = time.monotonic()
    previous = None
    while not svc.watch.closed and time.monotonic() - started < STREAM_MAX_S:
        current = await svc.dashboard_events.pulse()
        for name, data in changes(previous, current):
            yield _event(name, data)
            sent_at = time.monotonic()
        previous = current
        if time.monotonic() - sent_at >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            sent_at = time.monotonic()
        await asyncio.sleep(TICK_S)


@router.get(
    "/ui/events",
    summary="Server-sent events of fleet counts and rollout state changes (with "
    "Accept: text/event-stream; otherwise the current counts once, as JSON)",
    responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}},
)
async def events(request: Request,
                 _ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
                 svc: Services = Depends(services)) -> Response:  # fmt: skip
    if "text/event-stream" not in request.headers.get("accept", ""):
        current = await svc.dashboard_events.pulse()
        return JSONResponse(dict(changes(None, current)))
    return StreamingResponse(_stream(svc), media_type="text/event-stream",
                             headers={"cache-control": "no-store",
                                      "x-accel-buffering": "no"})  # fmt: skip
