"""``realtime.progress_stream.ProgressStream``'s close: the final state goes last, and a held state already being
sent is not cut off (cancelled in its broadcast, that room would be recorded as lost and its watchers resync)."""

import asyncio

from realtime.progress_stream import ProgressStream


async def test_close_lets_a_held_state_being_sent_finish_then_sends_the_final_one() -> None:
    sent: list[int] = []
    sending, release = asyncio.Event(), asyncio.Event()

    async def send(state: dict) -> None:
        if state["n"] == 2:  # the held state, sent by the flusher: it waits here, as a broadcast waits for Redis
            sending.set()
            await release.wait()
        sent.append(state["n"])

    stream = ProgressStream(send, interval=0.05)
    await stream.update({"n": 1, "status": "running"})  # sent at once
    await stream.update({"n": 2, "status": "running"})  # too soon: held, then sent by the flusher
    await asyncio.wait_for(sending.wait(), 5)
    closing = asyncio.ensure_future(stream.close({"n": 3, "status": "completed"}))
    for _ in range(3):
        await asyncio.sleep(0)  # close has started (and, before, cancelled the flusher in its send)
    release.set()
    await asyncio.wait_for(closing, 5)
    assert sent == [1, 2, 3]  # (before: [1, 3], the held state's broadcast cancelled half-way)


async def test_close_drops_a_held_state_still_waiting_for_its_turn() -> None:
    sent: list[int] = []

    async def send(state: dict) -> None:
        sent.append(state["n"])

    stream = ProgressStream(send, interval=10)
    await stream.update({"n": 1, "status": "running"})
    await stream.update({"n": 2, "status": "running"})  # held for 10 s
    await stream.close({"n": 3, "status": "completed"})  # replaces it
    await asyncio.sleep(0)
    assert sent == [1, 3] and stream._flusher is not None and stream._flusher.cancelled()  # not left waiting 10 s
