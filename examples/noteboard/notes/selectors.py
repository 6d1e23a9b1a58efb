"""Reads."""

from typing import Any

from django.db.models import QuerySet

from .models import Board, Note


def is_member(*, user: Any, board_id: int) -> bool:
    """Whether ``user`` is a member of the board (False for an unknown board)."""
    return Board.objects.filter(pk=board_id, members=user).exists()


def board_notes(*, board_id: int) -> QuerySet[Note]:
    """The board's notes, oldest first."""
    return Note.objects.filter(board_id=board_id).order_by("pk")
