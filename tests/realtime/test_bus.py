"""``realtime.bus.settle``: at shutdown, what was sent on commit finishes before the process stops delivering.

Run on the in-process server's event loop, with submissions made from this (another) thread, as a request's or a
job's on-commit code makes them.
"""

import asyncio
import logging

import pytest

from realtime import bus

from .test_middleware import _sleeper


def _settle(timeout: float) -> int:
    return asyncio.run_coroutine_threadsafe(bus.settle(timeout), bus._loop).result(timeout + 10)  # type: ignore[arg-type]


def test_settle_waits_for_every_broadcast_under_way_and_for_no_job(server) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    bus.submit(_sleeper(3.0, done, "job"))  # unordered: a job launched, which shutdown must not wait for
    bus.submit(_sleeper(0.3, done, "first"), ordered=True)
    bus.submit(_sleeper(0.1, done, "second"), ordered=True)  # runs once "first" has finished
    assert _settle(5) == 0
    assert done == ["first", "second"]  # (without the wait: [], both cancelled as the loop ends)


def test_settle_is_bounded_and_says_what_it_left(server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    bus.submit(_sleeper(2.0, done, "slow"), ordered=True)
    with caplog.at_level(logging.WARNING, logger="realtime.bus"):
        assert _settle(0.2) == 1
    assert done == [] and "shutting down with 1 broadcast(s) still under way after 0.2 s" in caplog.text
    assert _settle(5) == 0 and done == ["slow"]
