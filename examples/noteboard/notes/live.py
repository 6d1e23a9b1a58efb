"""Notes, live: a board's notes in its room, for its members only (see the README)."""

from realtime import Frames, leave_when_removed, live_model, room_kind

from . import selectors
from .models import Board, Note
from .schemas import note_json

BOARD = room_kind(
    join="join_board",
    leave="leave_board",
    key="board_id",
    key_type=int,
    prefix="board_",
    may_join=lambda user, board_id: selectors.is_member(user=user, board_id=board_id),
    snapshot=lambda user, board_id: Frames(
        "initial_notes", "notes", [note_json(n) for n in selectors.board_notes(board_id=board_id)], {"board_id": board_id}
    ),
    refusal="board not found",
)

live_model(
    Note,
    room=lambda note: BOARD.room(note.board_id),
    data=note_json,
    created="note_created",
    updated="note_updated",
    deleted="note_deleted",
    deleted_data=lambda note: {"id": note.pk, "board_id": note.board_id},
    moves_with="board_id",
)
leave_when_removed(Board.members, BOARD)  # a removed member's open connections leave the board's room
