"""Writes: each one transaction; realtime broadcasts what they save once it commits."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import Board, Note


@transaction.atomic
def board_create(*, name: str, usernames: Iterable[str] = ()) -> Board:
    """A new board with these users as members (unknown usernames raise ``User.DoesNotExist``)."""
    board = Board.objects.create(name=name)
    board.members.set([get_user_model().objects.get(username=username) for username in usernames])
    return board


@transaction.atomic
def note_create(*, board_id: int, text: str) -> Note:
    """A new note on the board (``Board.DoesNotExist`` for an unknown board)."""
    board = Board.objects.get(pk=board_id)
    return Note.objects.create(board=board, text=text)


@transaction.atomic
def note_update(*, note_id: int, text: str | None = None, board_id: int | None = None) -> Note:
    """Change a note's text and/or move it to another board."""
    note = Note.objects.select_for_update().get(pk=note_id)
    if text is not None:
        note.text = text
    if board_id is not None:
        note.board = Board.objects.get(pk=board_id)
    note.save()
    return note


@transaction.atomic
def note_delete(*, note_id: int) -> None:
    """Delete a note."""
    Note.objects.select_for_update().get(pk=note_id).delete()
