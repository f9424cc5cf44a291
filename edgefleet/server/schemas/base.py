"""What every wire schema shares: strict request models and the bound of integers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# The largest integer a database column holds (SQLite and PostgreSQL BIGINT): the bound of
# every sequence number and cursor a request may carry.
SQL_INTEGER_MAX = 2**63 - 1


class Strict(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
