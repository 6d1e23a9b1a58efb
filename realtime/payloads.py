"""The shapes of client -> server event payloads (validated before any handler runs)."""

from uuid import UUID

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Payload):
    pass


class ProjectRef(Payload):
    project_id: UUID


class ProgressRef(Payload):
    progress_id: UUID
