"""FailureRun: a failure every client meets at once is logged as a run (start, progress, end), not once per client."""

from __future__ import annotations

import logging

from realtime import room_kinds
from realtime.failure_runs import FailureRun

LOGGER = "tests.failure_runs"


def test_a_run_of_failures_is_logged_at_its_start_every_interval_and_at_its_end(caplog) -> None:
    clock = [1000.0]
    run = FailureRun(logging.getLogger(LOGGER), "history unreachable", every=60, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(500):  # every client of a node reconnecting within a second
            run.failed(ConnectionError("refused"))
        clock[0] += 61
        run.failed(TimeoutError("slow"))
        run.failed(TimeoutError("slow"))
        run.succeeded()
        run.succeeded()  # a success outside a run logs nothing
        run.failed(ConnectionError("again"))  # a new run starts with its own first line
    assert [r.getMessage() for r in caplog.records] == [
        "history unreachable (ConnectionError: refused)",
        "history unreachable: still, 501 times so far (last: TimeoutError: slow)",
        "history unreachable: over after 502 times",
        "history unreachable (ConnectionError: again)",
    ]
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False, True]  # a run's first: its traceback


async def test_joins_that_cannot_reach_history_are_logged_as_one_run(caplog, monkeypatch) -> None:
    """room_kinds: each of those joins gets a snapshot (None: no positions); the log gets the run, not a line per join."""

    async def unreachable(*args: object) -> None:
        raise ConnectionError("redis down")

    async def reachable(*args: object) -> list:
        return []

    kind = room_kinds.RoomKind(join="join_x", leave="leave_x", snapshot=lambda user, key: None)  # recoverable
    monkeypatch.setattr(room_kinds, "_unreachable", FailureRun(logging.getLogger(room_kinds.__name__), "history unreachable"))
    monkeypatch.setattr(room_kinds, "_positions", unreachable)
    with caplog.at_level(logging.WARNING, logger=room_kinds.__name__):
        for _ in range(100):
            assert await room_kinds._positions_or_none(kind, None, ["x"], {}) is None
        monkeypatch.setattr(room_kinds, "_positions", reachable)
        assert await room_kinds._positions_or_none(kind, None, ["x"], {}) == []
    assert [r.getMessage() for r in caplog.records] == [
        "history unreachable (ConnectionError: redis down)",
        "history unreachable: over after 100 times",
    ]
