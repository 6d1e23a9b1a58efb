"""``realtime.bus.finish_sends``: at shutdown, what was sent on commit finishes before the process stops delivering.

Run on the in-process server's event loop, with submissions made from this (another) thread, as a request's or a
job's on-commit code makes them.
"""

import asyncio
import logging
import threading

import pytest

from realtime import bus
from realtime.models import LostBroadcast

from .test_middleware import _sleeper


def _finish_sends(timeout: float) -> int:
    return asyncio.run_coroutine_threadsafe(bus.finish_sends(timeout), bus._loop).result(timeout + 10)  # type: ignore[arg-type]


def test_shutdown_waits_for_every_broadcast_under_way_and_for_no_job(server) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []

    async def submits_another() -> None:  # a broadcast whose sending submits one more meanwhile (waited for too)
        await asyncio.sleep(0.1)
        bus.submit(_sleeper(0.2, done, "meanwhile"), ordered=True)
        done.append("first")

    bus.submit(_sleeper(1.5, done, "job"))  # unordered: a job launched, which shutdown must not wait for
    bus.submit(submits_another(), ordered=True)
    bus.submit(_sleeper(0.1, done, "second"), ordered=True)  # runs once the first has finished
    assert _finish_sends(5) == 0
    assert done == ["first", "second", "meanwhile"]  # (not yet run, had it not waited)
    assert not LostBroadcast.objects.exists()


def test_shutdown_waits_for_a_broadcast_handed_over_but_not_started_yet(server) -> None:  # type: ignore[no-untyped-def]
    """Another thread submitted it just before shutdown began: its start is queued on the loop, not running yet.
    (Before: not counted until it started, so shutdown found nothing under way and went on without it.)"""
    done: list[str] = []

    async def shutdown_right_after_a_submission() -> int:
        submitter = threading.Thread(target=lambda: bus.submit(_sleeper(0.3, done, "late"), ordered=True))
        submitter.start()
        submitter.join()  # blocks the loop a moment: the submission's start waits behind this coroutine
        return await bus.finish_sends(5)

    assert asyncio.run_coroutine_threadsafe(shutdown_right_after_a_submission(), bus._loop).result(15) == 0  # type: ignore[arg-type]
    assert done == ["late"]


def test_past_its_bound_shutdown_records_every_room_as_lost(server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """Which rooms the broadcasts still under way were for is unknown: every room ("") is recorded as lost, so another
    server has every watcher resync (the process ends with them, and nothing else would tell those watchers)."""
    done: list[str] = []
    bus.submit(_sleeper(2.0, done, "slow"), ordered=True)
    with caplog.at_level(logging.WARNING, logger="realtime"):
        assert _finish_sends(0.2) == 1
    assert done == [] and "shutting down with 1 submission(s) sent on commit still under way after 0.2 s" in caplog.text
    assert list(LostBroadcast.objects.values_list("room", flat=True)) == [""]
    assert _finish_sends(5) == 0 and done == ["slow"]
