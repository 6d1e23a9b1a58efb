"""A second Django project that uses realtime only through ``from realtime import …`` (examples/noteboard).

Driven by the official socket.io-client (Node); every write happens in another process than the server
(``manage.py shell`` / ``add_note``), so every event travels realtime's remote path (the signed door).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from realtime.testing import unstamped
from tests.support.node_client import NodeClient

if TYPE_CHECKING:
    from .conftest import NoteBoard

Connect = Callable[[str], Awaitable[NodeClient]]


@pytest.fixture
async def connect(noteboard: NoteBoard) -> AsyncIterator[Connect]:
    """``await connect("alice")``: a Node socket.io-client connected to the note board with that user's token."""
    made: list[NodeClient] = []

    async def factory(username: str) -> NodeClient:
        client = NodeClient()
        made.append(client)
        await client.connect(noteboard.url, auth={"token": noteboard.tokens[username]})
        return client

    yield factory
    for client in made:
        await client.close()


async def new_board(noteboard: NoteBoard, *members: str) -> int:
    return int(await noteboard.manage("add_board", "board", *members))


def py(value: object) -> str:
    """A value spelled as a Python literal for ``manage.py shell -c`` code."""
    return json.dumps(value)


SERVICES = "import json; from django.db import transaction; from notes import services; "


async def test_a_non_member_is_refused_and_a_member_joins(noteboard: NoteBoard, connect: Connect) -> None:
    board = await new_board(noteboard, "alice")
    bob = await connect("bob")
    assert await bob.call("join_board", {"board_id": board}) == {"ok": False, "error": "board not found"}
    assert await bob.call("join_board", {"board_id": 999_999}) == {"ok": False, "error": "board not found"}  # unknown: the same answer
    alice = await connect("alice")
    assert await alice.call("join_board", {"board_id": board}) == {"ok": True, "board_id": board}
    assert bob.received("initial_notes") == []  # the refused joiner was sent nothing


async def test_a_bad_board_id_is_refused_with_a_reason(noteboard: NoteBoard, connect: Connect) -> None:
    alice = await connect("alice")
    ack = await alice.call("join_board", {"board_id": "not-a-number"})
    assert ack["ok"] is False and "board_id" in ack["error"]
    ack = await alice.call("join_board", {})
    assert ack["ok"] is False and "board_id" in ack["error"]


async def test_the_joiner_gets_the_board_s_notes(noteboard: NoteBoard, connect: Connect) -> None:
    board = await new_board(noteboard, "alice")
    other = await new_board(noteboard, "alice")
    ids = await noteboard.shell(
        SERVICES + f"print(json.dumps([services.note_create(board_id={board}, text=t).pk for t in ('one', 'two')]"
        f" + [services.note_create(board_id={other}, text='elsewhere').pk]))"
    )
    alice = await connect("alice")
    assert (await alice.call("join_board", {"board_id": board}))["ok"] is True
    snapshot = await alice.wait_for("initial_notes")
    assert snapshot["board_id"] == board and snapshot["part"] == 1 and snapshot["parts"] == 1 and snapshot["snapshot"]
    assert snapshot["notes"] == [
        {"id": ids[0], "board_id": board, "text": "one", "version": 1},
        {"id": ids[1], "board_id": board, "text": "two", "version": 1},
    ]


async def test_created_updated_deleted_reach_the_board_s_members(noteboard: NoteBoard, connect: Connect) -> None:
    board = await new_board(noteboard, "alice", "bob")
    elsewhere = await new_board(noteboard, "bob")
    alice = await connect("alice")
    assert (await alice.call("join_board", {"board_id": board}))["ok"] is True
    await alice.wait_for("initial_notes")

    note = await noteboard.shell(SERVICES + f"print(services.note_create(board_id={board}, text='draft').pk)")
    assert unstamped(await alice.wait_for("note_created")) == {"id": note, "board_id": board, "text": "draft", "version": 1}
    await noteboard.shell(SERVICES + f"services.note_update(note_id={note}, text='final')")
    assert unstamped(await alice.wait_for("note_updated")) == {"id": note, "board_id": board, "text": "final", "version": 2}
    await noteboard.shell(SERVICES + f"services.note_create(board_id={elsewhere}, text='not yours'); services.note_delete(note_id={note})")
    assert unstamped(await alice.wait_for("note_deleted")) == {"id": note, "board_id": board}
    # The other board's note was created before the delete, by the same process: had it reached alice, it would be here.
    assert [unstamped(n) for n in alice.received("note_created")] == [{"id": note, "board_id": board, "text": "draft", "version": 1}]


async def test_a_rolled_back_write_sends_nothing(noteboard: NoteBoard, connect: Connect) -> None:
    board = await new_board(noteboard, "alice")
    alice = await connect("alice")
    assert (await alice.call("join_board", {"board_id": board}))["ok"] is True
    await alice.wait_for("initial_notes")
    code = (
        SERVICES + "\ntry:\n"
        "    with transaction.atomic():\n"
        f"        services.note_create(board_id={board}, text='rolled back')\n"
        "        raise RuntimeError('changed my mind')\n"
        "except RuntimeError:\n"
        "    pass\n"
        # Sent after the rollback by the same process, in order: once it is here, anything sent before would be too.
        f"services.note_create(board_id={board}, text='marker')\n"
    )
    await noteboard.shell(code)
    marker = await alice.wait_for("note_created")
    assert marker["text"] == "marker"
    assert [n["text"] for n in alice.received("note_created")] == ["marker"]
    assert await noteboard.shell(f"from notes.models import Note; print(Note.objects.filter(board_id={board}).count())") == 1


async def test_a_note_moved_away_is_deleted_for_the_old_board(noteboard: NoteBoard, connect: Connect) -> None:
    old = await new_board(noteboard, "alice")
    new = await new_board(noteboard, "bob")
    note = await noteboard.shell(SERVICES + f"print(services.note_create(board_id={old}, text='moving').pk)")
    alice, bob = await connect("alice"), await connect("bob")
    assert (await alice.call("join_board", {"board_id": old}))["ok"] is True
    assert (await bob.call("join_board", {"board_id": new}))["ok"] is True
    assert [n["id"] for n in (await alice.wait_for("initial_notes"))["notes"]] == [note]

    await noteboard.shell(SERVICES + f"services.note_update(note_id={note}, board_id={new})")
    assert unstamped(await alice.wait_for("note_deleted")) == {"id": note, "board_id": old}
    assert unstamped(await bob.wait_for("note_updated")) == {"id": note, "board_id": new, "text": "moving", "version": 2}
    assert alice.received("note_updated") == []  # the old board only hears that it left


async def test_a_note_from_the_management_command_reaches_the_client(noteboard: NoteBoard, connect: Connect) -> None:
    board = await new_board(noteboard, "alice")
    alice = await connect("alice")
    assert (await alice.call("join_board", {"board_id": board}))["ok"] is True
    await alice.wait_for("initial_notes")
    note = int(await noteboard.manage("add_note", str(board), "from the command line"))
    assert unstamped(await alice.wait_for("note_created")) == {
        "id": note,
        "board_id": board,
        "text": "from the command line",
        "version": 1,
    }


async def test_after_leaving_the_board_nothing_more_arrives(noteboard: NoteBoard, connect: Connect) -> None:
    left, kept = await new_board(noteboard, "alice"), await new_board(noteboard, "alice")
    alice = await connect("alice")
    for board in (left, kept):
        assert (await alice.call("join_board", {"board_id": board}))["ok"] is True
        await alice.wait_for("initial_notes")
    assert await alice.call("leave_board", {"board_id": left}) == {"ok": True, "board_id": left}
    await noteboard.shell(
        SERVICES + f"services.note_create(board_id={left}, text='unseen'); services.note_create(board_id={kept}, text='marker')"
    )
    assert (await alice.wait_for("note_created"))["text"] == "marker"
    assert [n["text"] for n in alice.received("note_created")] == ["marker"]


async def test_a_board_id_beyond_sqlite_s_integers_is_refused_and_the_server_keeps_serving(noteboard: NoteBoard, connect: Connect) -> None:
    alice = await connect("alice")
    # Keys are 64-bit JSON integers: 2**63 is refused before any query; 2**70 reaches the server in exponent
    # notation; "5" and 5.5 are not integers.
    for bad in (2**63, 2**70, str(2), 5.5, True):
        ack = await alice.call("join_board", {"board_id": bad})
        assert ack["ok"] is False and ack["error"].startswith("invalid payload: board_id"), (bad, ack)
    board = await new_board(noteboard, "alice")
    assert (await alice.call("join_board", {"board_id": board}))["ok"] is True


async def test_a_member_removed_from_the_board_leaves_its_room(noteboard: NoteBoard, connect: Connect) -> None:
    board, other = await new_board(noteboard, "alice", "bob"), await new_board(noteboard, "bob")
    bob = await connect("bob")
    for joined in (board, other):
        assert (await bob.call("join_board", {"board_id": joined}))["ok"] is True
        await bob.wait_for("initial_notes")
    # From the user's side (user.boards), as an admin's user form would: the room is left on commit.
    await noteboard.shell(f"from django.contrib.auth.models import User; User.objects.get(username='bob').boards.remove({board})")
    await noteboard.shell(
        SERVICES + f"services.note_create(board_id={board}, text='unseen'); services.note_create(board_id={other}, text='marker')"
    )
    assert (await bob.wait_for("note_created"))["text"] == "marker"
    assert [n["text"] for n in bob.received("note_created")] == ["marker"]
    assert await bob.call("join_board", {"board_id": board}) == {"ok": False, "error": "board not found"}
