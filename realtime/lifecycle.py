"""Work other apps need done when a server process starts (registered from their ``ready()``)."""

from collections.abc import Awaitable, Callable

Hook = Callable[[], Awaitable[None]]
startup_hooks: list[Hook] = []


def at_startup(hook: Hook) -> Hook:
    startup_hooks.append(hook)
    return hook
