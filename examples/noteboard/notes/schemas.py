"""A note's one JSON shape, for events and snapshots alike."""

from typing import Any

from .models import Note


def note_json(note: Note) -> dict[str, Any]:
    """``{id, board_id, text, version}``."""
    return {"id": note.pk, "board_id": note.board_id, "text": note.text, "version": note.version}
