"""What every wire schema shares: strict request models and the bound of integers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

# The largest integer a database column holds (SQLite and PostgreSQL BIGINT): the bound of
# every sequence number and cursor a request may carry.
SQL_INTEGER_MAX = 2**63 - 1


class Strict(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# A moment as Python's isoformat() writes it ("+00:00", not pydantic's "Z"): the form the
# API has always sent for the fields that were rendered by hand.
IsoDatetime = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class DeletedOut(BaseModel):
    deleted: str = Field(description="The name of what was deleted")
