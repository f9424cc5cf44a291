"""HTTP wire schemas: uploaded blobs (artifact files, state archives)."""

from __future__ import annotations

from pydantic import BaseModel


class StoredBlobOut(BaseModel):
    sha256: str
    size_bytes: int
