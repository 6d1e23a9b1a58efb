"""A serving process tunes the garbage collector once it has started (see realtime.lifecycle.tune_gc)."""

import gc

from realtime import lifecycle


def test_server_startup_freezes_startup_objects_and_raises_the_young_threshold(server) -> None:
    # `server` ran the ASGI lifespan startup of a real uvicorn in this process.
    assert gc.get_threshold() == lifecycle.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_tuning_happens_once_per_process(server) -> None:
    created_since_startup = [[] for _ in range(1000)]  # lists: tracked by the collector, so a freeze would take them in
    frozen = gc.get_freeze_count()
    lifecycle.tune_gc()
    # A second freeze would have taken in at least the lists above; frozen objects can only be freed.
    assert gc.get_freeze_count() <= frozen
    # And they are still the collector's to free: a frozen object is no longer among gc.get_objects().
    collectable = {id(o) for o in gc.get_objects()}
    assert all(id(o) in collectable for o in created_since_startup)
    assert gc.get_threshold() == lifecycle.GC_THRESHOLDS
