"""A typed view sent with a status code (or media type) the route picks at run time.

A route with one answer returns its pydantic model and declares it (FastAPI renders it);
a route that answers 200 or 201 (or 202) by outcome renders the same model here, so the
JSON is the model's either way."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel


def typed_response(out: BaseModel, status_code: int = 200) -> JSONResponse:
    """`out` as JSON, by alias, as FastAPI would render it for a declared response_model."""
    return JSONResponse(out.model_dump(mode="json", by_alias=True), status_code=status_code)
