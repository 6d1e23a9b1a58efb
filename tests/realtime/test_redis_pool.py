"""The Redis pool serves waiters first come first served, and every turn comes back (a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.redis_pool import FairBlockingConnectionPool
from tests.support.live_server import free_port


async def test_a_connection_given_back_goes_to_the_first_waiter_not_to_a_caller_asking_again(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The caller that gives a connection back and asks again at once (a publisher sending back to back) queues behind
    the waiters. (redis-py's own pool let it take the connection again: a waiter could wait out its timeout.)"""
    pool = FairBlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=5)
    served: list[str] = []
    try:
        held = await pool.get_connection()

        async def wait(name: str) -> None:
            connection = await pool.get_connection()
            served.append(name)
            await pool.release(connection)

        waiters = [asyncio.ensure_future(wait(name)) for name in ("first", "second")]
        for _ in range(5):
            await asyncio.sleep(0)  # both are waiting now
        await pool.release(held)
        again = await pool.get_connection()  # the same caller, at once
        served.append("again")
        await pool.release(again)
        await asyncio.gather(*waiters)
        assert served == ["first", "second", "again"]
    finally:
        await pool.aclose()


async def test_a_connection_that_cannot_connect_gives_its_turn_back() -> None:
    """Nothing listens on the port: every call fails with the connection's own error, never with "No connection
    available" (a turn kept by a failed call would leave the pool short for good)."""
    pool = FairBlockingConnectionPool.from_url(f"redis://127.0.0.1:{free_port()}/0", max_connections=2, timeout=5)
    try:
        for _ in range(5):
            with pytest.raises(RedisConnectionError) as failed:
                await pool.get_connection()
            assert "No connection available" not in str(failed.value)
        assert not pool._holding and pool._turns._value == pool.max_connections  # each given back once
    finally:
        await pool.aclose()


async def test_a_caller_that_gets_no_turn_in_time_is_told_so(redis_server) -> None:  # type: ignore[no-untyped-def]
    pool = FairBlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0.2)
    try:
        held = await pool.get_connection()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await pool.get_connection()
        await pool.release(held)
        await pool.release(await pool.get_connection())  # the timed-out caller took no turn with it
    finally:
        await pool.aclose()
