"""The shapes of client -> server event payloads (validated before any handler runs)."""

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Payload):
    pass


class ProjectRef(Payload):
    project_id: UUID


class ProgressRef(Payload):
    progress_id: UUID


class ChatRef(Payload):
    session_id: UUID


class ChatPost(Payload):
    session_id: UUID
    body: str = Field(..., min_length=1, max_length=4_000)
