"""HTTP wire schemas: federated training jobs (the device routes speak msgpack, not these)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoundSummaryOut(BaseModel):
    round: int
    outcome: str = Field(description="done | failed")
    reason: str
    planned: int
    clients: list[str] = Field(description="The devices planned for the round")
    keys: int = Field(description="Clients that sent their keys")
    shares: int = Field(description="... and their shares")
    masked: int = Field(description="... and their masked update: the updates summed")
    unmasked: int = Field(description="Clients that helped unmask")
    dropped: list[str] = Field(description="Sent shares, then no masked update")
    accuracy: float | None = Field(
        description="Mean accuracy of the received model on the clients' own test sets"
    )
    bytes_up: int
    bytes_down: int
    bytes_per_client: int
    opened_at: str


class CurrentRoundOut(BaseModel):
    round: int
    phase: str
    clients: list[str]
    answered: list[str]


class PrivacyOut(BaseModel):
    noise_multiplier: float
    clip_norm: float
    delta: float
    epsilon_so_far: float | None = Field(description="None: no noise, no guarantee")
    epsilon_at_end: float | None


class TrainingJobOut(BaseModel):
    name: str
    status: str
    rounds: int
    rounds_done: int
    reason: str
    strategy: str
    model_sha256: str = Field(description="The current global weights (float32 blob)")
    history: list[RoundSummaryOut] = Field(description="One entry per round attempt")
    current: CurrentRoundOut | None = None
    privacy: PrivacyOut | None = None
    final_artifact: str | None = Field(None, description="NAME@VERSION of the last model")


class AppliedTrainingOut(TrainingJobOut):
    created: bool
