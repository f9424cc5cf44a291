"""The one error tree of edgefleet, and the table that maps it to HTTP status codes.

    EdgefleetError                    base; carries a stable machine `code` and a message
    ├── InvalidInput                  400  malformed or out-of-range input
    │   ├── SelectorSyntaxError       400  a label selector that does not parse
    │   ├── PayloadTooLarge           413  a body over the size limit
    │   └── RangeNotSatisfiable       416  a byte range outside the blob
    ├── Unauthenticated               401  no credentials, bad token, bad or replayed signature
    ├── Forbidden                     403  authenticated, but not allowed
    │   └── DeviceNotApproved         403  device is pending, rejected or revoked
    ├── NotFound                      404  unknown id or name
    ├── Conflict                      409  the target's state does not allow the action
    │   ├── IllegalTransition         409  a state machine refused a move
    │   └── LeaseLost                 409  a controller's lease was taken over: write refused
    ├── SettingsError                 ---  a setting with a bad value (names the key)
    ├── StoreError                    503  the database is unavailable or failed
    ├── Unavailable                   503  a peer cannot be reached (network, timeout)
    └── ApiError                      ---  client side: an error response from a server

Errors of other libraries (SQLAlchemy, httpx, cryptography, pydantic) are translated into
this tree where they enter edgefleet; nothing else crosses a module boundary.
"""

from __future__ import annotations


class EdgefleetError(Exception):
    """Base of every error edgefleet raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(EdgefleetError):
    code = "invalid_input"


class SelectorSyntaxError(InvalidInput):
    code = "invalid_selector"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class RangeNotSatisfiable(InvalidInput):
    code = "range_not_satisfiable"


class Unauthenticated(EdgefleetError):
    code = "unauthenticated"


class Forbidden(EdgefleetError):
    code = "forbidden"


class DeviceNotApproved(Forbidden):
    """The device exists but may not talk to the control plane; `code` says why."""

    code = "device_not_approved"


class NotFound(EdgefleetError):
    code = "not_found"


class Conflict(EdgefleetError):
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class LeaseLost(Conflict):
    """A controller's write carried a fencing token its lease no longer has."""

    code = "lease_lost"


class SettingsError(EdgefleetError):
    code = "bad_setting"


class StoreError(EdgefleetError):
    code = "store_unavailable"


class Unavailable(EdgefleetError):
    code = "unavailable"


class ApiError(EdgefleetError):
    """An error response received from an edgefleet server."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


HTTP_STATUS: dict[type[EdgefleetError], int] = {
    PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    StoreError: 503,
    Unavailable: 503,
    EdgefleetError: 500,
}


def http_status_for(error: EdgefleetError) -> int:
    """The HTTP status for an error: the entry of its nearest class in HTTP_STATUS."""
    if isinstance(error, ApiError):
        return error.status
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
