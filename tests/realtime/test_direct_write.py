"""The uvicorn fast path: frames written straight to websockets arrive whole and in order."""

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from projects.models import Task
from realtime import direct_write
from tests.conftest import db
from tests.support import factories as f


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frame_is_a_valid_unmasked_final_frame(size):
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte characters: the length counts bytes
    reader = StreamReader()
    reader.feed_data(direct_write.text_frame(text))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert (frame.opcode, frame.fin, frame.data.decode()) == (Opcode.TEXT, True, text)


async def test_broadcasts_use_the_fast_path_and_arrive_whole_and_in_order(connect, monkeypatch):
    used = []
    original = direct_write.protocol_for

    def counting(socket):
        protocol = original(socket)
        used.append(protocol is not None)
        return protocol

    monkeypatch.setattr(direct_write, "protocol_for", counting)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="t")
    # Born a websocket (the direct path) and upgraded from long-polling (the queue).
    clients = [await connect(alice, transports=["websocket"]), await connect(alice)]
    for client in clients:
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        await client.wait_for("initial_tasks")

    descriptions = [f"{i}:" + "x" * size for i, size in enumerate([10, 1_000, 70_000] + [5] * 40)]

    def burst() -> None:
        t = Task.objects.get(pk=task.pk)
        for description in descriptions:
            t.description = description
            t.save()

    await db(burst)()
    for client in clients:
        updates = [await client.wait_for("task_updated", timeout=10) for _ in descriptions]
        assert [u["version"] for u in updates] == list(range(2, 2 + len(descriptions)))
        assert [u["description"] for u in updates] == descriptions
    assert any(used) and not all(used), "both paths should have been taken"
