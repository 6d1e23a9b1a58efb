"""What the garbage collector finds unreachable: objects only a collection could free (reference cycles)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Collect, run the block, collect again: the list then holds what that second collection found unreachable,
    kept alive (``gc.DEBUG_SAVEALL``) for the test to look at. Code running in this process's other threads (the
    in-process server) counts too."""
    gc.collect()
    found: list[object] = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
