"""Recovery: broadcasts to recoverable rooms are numbered; a rejoin naming the last one it saw gets just what it missed."""

from __future__ import annotations

from typing import Any

import pytest

from realtime import history
from tests.conftest import db
from tests.support import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def live(data: dict[str, Any]) -> dict[str, Any]:
    return data["_live"]


async def join(client: Any, project: Any, since: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Join the project's room; returns (ack, the realtime:joined marker)."""
    payload: dict[str, Any] = {"project_id": str(project.pk)}
    if since is not None:
        payload["since"] = since
    ack = await client.call("join_project", payload)
    assert ack["ok"], ack
    return ack, await client.wait_for("realtime:joined", lambda m: m["room"] == str(project.pk))


async def test_broadcasts_are_numbered_and_a_first_join_gets_the_snapshot(connect) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    ack, marker = await join(client, project)
    assert marker["missed"] is None and marker["room"] == str(project.pk)
    assert (await client.wait_for("initial_tasks"))["tasks"] == []
    for n in range(3):
        await db(f.make_task)(project, title=f"t{n}")
    created = [await client.wait_for("task_created") for _ in range(3)]
    assert [live(t)["seq"] for t in created] == [marker["seq"] + 1, marker["seq"] + 2, marker["seq"] + 3]
    assert {live(t)["epoch"] for t in created} == {marker["epoch"]} and {live(t)["room"] for t in created} == {str(project.pk)}


async def test_a_rejoin_naming_its_last_broadcast_gets_only_what_it_missed(connect) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    first = await connect(alice)
    _, marker = await join(first, project)
    await first.wait_for("initial_tasks")
    task = await db(f.make_task)(project, title="seen")
    seen = live(await first.wait_for("task_created"))
    await first.close()  # offline: what happens now is missed
    await db(f.make_task)(project, title="missed 1")
    task.title = "missed 2"
    await db(task.save)()
    await db(task.delete)()

    again = await connect(alice)
    ack, marker = await join(again, project, since={"epoch": seen["epoch"], "seq": seen["seq"]})
    assert ack == {"ok": True, "project_id": str(project.pk)}  # the ack is as ever: the marker says what happened
    assert marker["join"] == {"event": "join_project", "project_id": str(project.pk)}
    assert [event for event, _ in marker["missed"]] == ["task_created", "task_updated", "task_deleted"]
    assert [live(data)["seq"] for _, data in marker["missed"]] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 3]
    assert marker["seq"] == seen["seq"] + 3
    await db(f.make_task)(project, title="live again")
    assert live(await again.wait_for("task_created"))["seq"] == marker["seq"] + 1
    assert again.received("initial_tasks") == []  # no snapshot: the missed events were enough


@pytest.mark.parametrize("since", ["another epoch", "too old", "ahead"])
async def test_a_rejoin_that_cannot_be_served_from_history_gets_the_snapshot(connect, since, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(history.history(), "size", 2)  # new rooms keep two broadcasts
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    _, marker = await join(client, project)
    await client.wait_for("initial_tasks")
    for n in range(4):
        await db(f.make_task)(project, title=f"t{n}")
        await client.wait_for("task_created")
    asked = {
        "another epoch": {"epoch": "0" * 16, "seq": marker["seq"] + 4},
        "too old": {"epoch": marker["epoch"], "seq": marker["seq"]},  # 4 missed, 2 kept
        "ahead": {"epoch": marker["epoch"], "seq": marker["seq"] + 99},
    }[since]
    again = await connect(alice)
    ack, joined = await join(again, project, since=asked)
    assert joined["missed"] is None
    assert len((await again.wait_for("initial_tasks"))["tasks"]) == 4


async def test_more_than_a_frame_of_missed_events_gets_the_snapshot(connect, settings) -> None:  # type: ignore[no-untyped-def]
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = 2_000
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    _, marker = await join(client, project)
    await client.close()
    for n in range(5):
        await db(f.make_task)(project, title=f"t{n}", description="d" * 500)
    again = await connect(alice)
    ack, joined = await join(again, project, since={"epoch": marker["epoch"], "seq": marker["seq"]})
    assert joined["missed"] is None
    frames = [await again.wait_for("initial_tasks")]
    while frames[-1]["part"] < frames[-1]["parts"]:
        frames.append(await again.wait_for("initial_tasks"))
    assert sum(len(frame["tasks"]) for frame in frames) == 5


@pytest.mark.parametrize(
    "since", [{"epoch": "e", "seq": -1}, {"epoch": "e", "seq": True}, {"epoch": "e", "seq": "3"}, {"epoch": "e" * 65, "seq": 1}, {"seq": 1}]
)
async def test_a_malformed_since_is_refused_with_a_reason(connect, since) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    ack = await client.call("join_project", {"project_id": str(project.pk), "since": since})
    assert ack["ok"] is False and ack["error"].startswith("invalid payload: since"), ack


async def test_chat_and_progress_rooms_recover_the_same_way(connect) -> None:  # type: ignore[no-untyped-def]
    from chat import services as chat_services

    alice = await db(f.make_user)("alice")
    session = await db(chat_services.chat_session_create)(created_by=alice, title="s")
    client = await connect(alice)
    assert (await client.call("join_chat", {"session_id": str(session.pk)}))["ok"]
    marker = await client.wait_for("realtime:joined")
    await client.close()
    await db(chat_services.chat_message_post)(session=session, author=alice, body="while away")
    again = await connect(alice)
    since = {"epoch": marker["epoch"], "seq": marker["seq"]}
    assert (await again.call("join_chat", {"session_id": str(session.pk), "since": since}))["ok"]
    joined = await again.wait_for("realtime:joined")
    assert [(event, data["body"]) for event, data in joined["missed"]] == [("chat_message", "while away")]
    assert again.received("chat_history") == []


def test_history_is_bounded_by_rooms_and_bytes_and_a_forgotten_room_never_matches_an_old_since() -> None:
    kept = history.History(size=3, rooms=2, budget=10_000)
    for n in range(5):
        kept.stamp("a", "e", {"n": n})
    epoch_a, seq_a = kept.current("a")
    assert seq_a == 5 and len(kept._log["a"]) == 3  # the last three only
    assert kept.missed("a", epoch=epoch_a, seq=2, budget=10_000) is not None
    assert kept.missed("a", epoch=epoch_a, seq=1, budget=10_000) is None  # the 2nd is gone: a snapshot instead
    kept.stamp("b", "e", {})
    kept.stamp("c", "e", {})  # a third room: "a", the least recently used, is forgotten
    assert "a" not in kept._log
    for n in range(6):
        kept.stamp("a", "e", {"n": n})  # numbered again from 1…
    again, seq = kept.current("a")
    assert seq == 6 and again != epoch_a  # …under another epoch: the old since (epoch_a, 5) cannot match
    assert kept.missed("a", epoch=epoch_a, seq=5, budget=10_000) is None
    small = history.History(size=100, rooms=100, budget=200)
    for room in "abcdef":
        small.stamp(room, "e", {"text": "x" * 40})
    assert small.bytes <= 200 and len(small._log) < 6  # bytes bound: least recently used rooms forgotten
