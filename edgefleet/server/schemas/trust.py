"""HTTP wire schemas: the TUF trust root."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgefleet.server.schemas.base import Strict


class SetRootRequest(Strict):
    root: dict[str, Any] = Field(description="Signed root metadata (TUF JSON)")
    targets: dict[str, Any] | None = Field(
        None, description="Targets re-signed by new targets keys, when a rotation changes them"
    )
