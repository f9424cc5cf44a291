"""The OpenAPI document, with each operation's authentication declared as the route runs it.

Every operation carries `x-auth`: the callers it admits, a list of `operator`, `device`
and `none` (anyone), read off the authentication dependency the route runs
(`server/auth.py`). An operation open to operators also carries `x-permission`: the
permission the role must hold, or `authenticated` when any role may call it. Tests derive
the role matrix from these fields, so a route without an authentication dependency (no
`x-auth`) is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from edgefleet.server.auth import (
    DeviceOrOperatorAuth,
    OperatorAuth,
    no_credentials,
    signed_device,
    signed_device_upload,
)
from edgefleet.server.ddi_auth import ddi_target, ddi_target_enrolling

_DEVICE_AUTH = (signed_device, signed_device_upload, ddi_target, ddi_target_enrolling)
ANY_ROLE = "authenticated"


def declared_auth(route: APIRoute) -> dict[str, Any]:
    """The `x-auth` (and `x-permission`) of a route; empty when it declares none."""
    callers: set[str] = set()
    out: dict[str, Any] = {}
    for call in _calls(route.dependant):
        if isinstance(call, OperatorAuth):
            callers.add("operator")
            out["x-permission"] = ANY_ROLE if call.permission is None else call.permission.value
        elif isinstance(call, DeviceOrOperatorAuth):
            callers |= {"device", "operator"}
            out["x-permission"] = call.permission.value
        elif call in _DEVICE_AUTH:
            callers.add("device")
        elif call is no_credentials:
            callers.add("none")
    return {"x-auth": sorted(callers), **out} if callers else {}


def declare_auth(router: APIRouter) -> None:
    """Put each route's declared authentication into its OpenAPI operation (call before
    the router is included in the app)."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            route.openapi_extra = {**(route.openapi_extra or {}), **declared_auth(route)}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)
