"""Every route answers with a declared, typed model (server/schemas/<noun>.py), or with a
Response of its own (files, streams, text, a status picked at run time): none answers a
dictionary that /openapi.json can only call "an object"."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response

from edgefleet.server import routes
from edgefleet.server.app import create_app
from edgefleet.server.settings import ServerSettings
from edgefleet.server.workload_settings import load_workload_settings
from edgefleet.store import Database


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data_dir = tmp_path_factory.mktemp("typed-answers")
    db = Database(f"sqlite:///{data_dir / 'db.sqlite'}")
    db.migrate()
    yield create_app(ServerSettings(data_dir=Path(data_dir)), load_workload_settings(), db)
    db.dispose()


def _untyped(schema: dict[str, Any] | None) -> bool:
    """An answer the document cannot describe: no schema, or an object without fields."""
    if not schema:
        return True
    if "$ref" in schema:
        return False
    if schema.get("type") == "array":
        return _untyped(schema.get("items"))
    if "anyOf" in schema:
        return all(_untyped(s) for s in schema["anyOf"])
    return schema.get("type") == "object" and "properties" not in schema


def _answering_themselves() -> set[tuple[str, str]]:
    """(METHOD, path) of the routes whose handler returns a Response of its own."""
    out = set()
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        for router in vars(module).values():
            if not isinstance(router, APIRouter):
                continue
            for route in router.routes:
                if not isinstance(route, APIRoute):
                    continue
                returned = get_type_hints(route.endpoint).get("return")
                if inspect.isclass(returned) and issubclass(returned, Response):
                    out |= {(method, route.path_format) for method in route.methods or ()}
    return out


def test_every_json_answer_is_a_declared_model(app: FastAPI) -> None:
    themselves = _answering_themselves()
    untyped, checked = [], 0
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if (method.upper(), path) in themselves:
                continue
            for code, answer in operation["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if code.startswith("2") and code != "204":
                    checked += 1
                    if _untyped(schema):
                        untyped.append(f"{method.upper()} {path} {code}")
    assert untyped == []
    assert checked > 100  # every operator and device route but those answering files


def test_a_route_that_answers_itself_still_declares_its_json_model(app: FastAPI) -> None:
    """Routes that pick their status at run time (typed_response) declare the model too."""
    spec = app.openapi()
    rollouts = spec["paths"]["/v1/rollouts"]["post"]["responses"]
    assert not _untyped(rollouts["201"]["content"]["application/json"]["schema"])
    root = spec["paths"]["/v1/trust/root"]["put"]["responses"]
    assert not _untyped(root["200"]["content"]["application/json"]["schema"])
    assert not _untyped(root["202"]["content"]["application/json"]["schema"])
