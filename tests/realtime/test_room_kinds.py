"""room_kind: declarations that would let a client spell someone else's room are refused; rooms have one spelling;
a recheck fails closed; a join that fails keeps no room."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from realtime import Frames, dispatcher, room_kind, room_kinds
from realtime.server import sio
from tests.conftest import db
from tests.support import factories as f


@pytest.fixture
def scratch_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinds declared by a test are forgotten afterwards (the registries are process-wide)."""
    monkeypatch.setattr(room_kinds, "_kinds", list(room_kinds._kinds))
    monkeypatch.setattr(dispatcher, "_events", dict(dispatcher._events))


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"key": "topic", "key_type": str}, "realtime's own rooms"),  # "user_1", a project id, another user's list…
        ({"key": "topic", "key_type": str, "prefix": "us"}, "realtime's own rooms"),  # "us" + "er_1"
        ({"key": "n", "key_type": int, "prefix": "user_"}, "realtime's own rooms"),  # "user_" + "1"
        ({"key": "topic", "key_type": str, "prefix": "chat"}, "join_chat"),  # would spell "chat_<uuid>"
        ({"key": "topic", "key_type": str, "prefix": "project_list_"}, "subscribe_projects"),  # another user's list
        ({"per_user": lambda user: [f"mine_{user.pk}"]}, "needs a prefix"),
        ({"key": "n", "key_type": int, "prefix": "board_"}, "join_board"),  # tag 3 would be board 3's room
        ({"key": "n", "key_type": int, "prefix": "board_1"}, "join_board"),  # "board_1" + "2" is board 12
    ],
)
def test_a_kind_whose_rooms_could_be_spelled_like_others_is_refused(scratch_kinds: None, options: dict[str, Any], reason: str) -> None:
    room_kind(join="join_board", leave="leave_board", key="board_id", key_type=int, prefix="board_")
    with pytest.raises(ValueError, match=reason):
        room_kind(join="join_x", leave="leave_x", **options)


def test_uuid_and_int_kinds_may_share_a_prefix_and_a_text_kind_has_its_own(scratch_kinds: None) -> None:
    room_kind(join="join_a", leave="leave_a", key="a", prefix="")  # beside projects' and progress' bare UUIDs
    room_kind(join="join_b", leave="leave_b", key="b", key_type=int, prefix="")  # digits never spell a UUID
    room_kind(join="join_t", leave="leave_t", key="t", key_type=str, prefix="topic:")
    with pytest.raises(ValueError, match="join_b"):
        room_kind(join="join_c", leave="leave_c", key="c", key_type=int, prefix="")  # two int kinds: "3" is both


def test_an_async_permission_check_is_refused_at_declaration(scratch_kinds: None) -> None:
    async def may_join(user: Any, key: Any) -> bool:  # a coroutine is truthy: it would admit everyone
        return False

    with pytest.raises(ValueError, match="may_join must be a plain function"):
        room_kind(join="join_v", leave="leave_v", key="v", key_type=int, prefix="vault_", may_join=may_join)


@pytest.mark.django_db
def test_only_a_true_answer_admits(scratch_kinds: None) -> None:
    answers = iter([1, "yes", None, True])
    kind = room_kind(join="join_w", leave="leave_w", key="w", key_type=int, prefix="w_", may_join=lambda user, key: next(answers))
    alice = f.make_user("alice")
    assert [kind.allows(alice, 1) for _ in range(4)] == [False, False, False, True]


def test_a_room_has_one_spelling(scratch_kinds: None) -> None:
    board = room_kind(join="join_board", leave="leave_board", key="board_id", key_type=int, prefix="board_")
    assert board.parse("board_12") == (True, 12)
    for other in ("board_012", "board_1_2", "board_ 12", "board_+12", "board_", "board_x", "boards_1"):
        assert board.parse(other) == (False, None), other


@pytest.mark.django_db
def test_a_recheck_whose_check_fails_leaves_the_room(scratch_kinds: None, caplog: pytest.LogCaptureFixture) -> None:
    def broken(user: Any, key: Any) -> bool:
        raise RuntimeError("database is locked")

    room_kind(join="join_z", leave="leave_z", key="z", key_type=int, prefix="z_", may_join=broken)
    alice = f.make_user("alice")
    assert room_kinds.may_stay(alice, "z_1") is False
    assert "check of room 'z_1' failed" in caplog.text
    assert room_kinds.may_stay(alice, "user_1") is True  # realtime's own rooms are not the kinds' to judge
    assert room_kinds.may_stay(alice, "nobody_s_kind") is False  # unclaimed: fail closed


async def test_a_join_whose_snapshot_fails_keeps_no_room(server, connect, scratch_kinds: None) -> None:  # type: ignore[no-untyped-def]
    def snapshot(user: Any, key: Any) -> Frames:
        raise RuntimeError("the snapshot could not be read")

    kind = room_kind(join="join_failing", leave="leave_failing", key="thing", prefix="failing_", snapshot=snapshot)
    alice = await db(f.make_user)("alice")
    client = await connect(alice)
    thing = uuid.uuid4()
    assert await client.call("join_failing", {"thing": str(thing)}) == {"ok": False, "error": "internal error"}
    assert not sio.manager.rooms["/"].get(kind.room(thing))  # entered, then left when the snapshot failed
    assert (await client.call("leave_project", {"project_id": str(thing)}))["ok"]  # and the connection serves on
