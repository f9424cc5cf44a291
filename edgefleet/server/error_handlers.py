"""How errors become HTTP responses: `{"error": {"code", "message", "request_id"}}`.

EdgefleetError subclasses map through edgefleet.errors.HTTP_STATUS; request validation
errors become 400 (malformed JSON) or 422 (schema) naming the field; anything unexpected is
logged with its traceback and answered 500 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgefleet.errors import EdgefleetError, http_status_for

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id_of(request)}}
    return JSONResponse(body, status_code=status)


def describe_validation_error(error: dict[str, Any]) -> str:
    """`body.labels.region: Input should be a valid string`."""
    location = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    elif error.get("type") == "missing":
        message = "field required"
    return f"{location}: {message}" if location else message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgefleetError)
    async def _edgefleet(request: Request, exc: EdgefleetError) -> JSONResponse:
        status = http_status_for(exc)
        if status >= 500:
            log.error("request failed", extra={"code": exc.code, "error": exc.message})
        return error_response(request, status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(request, 400, "malformed_json", "request body is not valid JSON")
        messages = "; ".join(describe_validation_error(e) for e in errors[:5])
        return error_response(request, 422, "invalid_request", messages)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(request, exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": request_id_of(request)})
        return error_response(
            request, 500, "internal", f"internal error (request id {request_id_of(request)})"
        )
