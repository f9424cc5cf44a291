"""HTTP wire schemas: the device's credentials for the MQTT device channel."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BrokerCredentials(BaseModel):
    username: str
    client_id: str
    password: str = Field(description="Connect with it; the same at every request")
    report_topic: str
    telemetry_topic: str
    desired_topic: str = Field(description="Retained, signed like the HTTP document")
