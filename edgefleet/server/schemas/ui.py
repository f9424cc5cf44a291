"""HTTP wire schemas: the web UI's session (a cookie in exchange for an API token)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoginRequest(BaseModel):
    token: str = Field(min_length=1, max_length=512, description="An API token")


class SessionOut(BaseModel):
    name: str
    role: str
    expires_at: str | None = Field(description="ISO 8601; None: the token never expires")


class SessionInfoOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    token_id: str
    role: str
    permissions: list[str] = Field(description="What the role may do (the UI hides the rest)")
