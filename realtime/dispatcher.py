"""Client events: the registry (``client_event``) and the dispatcher that runs them.

Every client -> server event answers through its acknowledgement with
``{"ok": true, ...}`` or ``{"ok": false, "error": "<reason>"}``. Before a handler
runs: the rate limit, the in-flight bound, payload validation (a ``Payload``
model) and the user read afresh. Bad input is logged once at warning level and
never raises out of a handler.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from pydantic import BaseModel, ConfigDict, ValidationError

from . import bus, limits

log = logging.getLogger(__name__)
User = get_user_model()

Ack = dict[str, Any]
BUSY = "busy: too many requests in flight"
GONE = "the connection is closed"  # the refusal (never seen by anyone) of work for a connection that went away


class Payload(BaseModel):
    """Base of client event payloads: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Payload):
    """An event that takes no payload (``{}`` or nothing)."""


class Reject(Exception):
    """Raised by a handler to refuse a request; the message is sent back as the reason."""


class Client:
    """One connection, as a handler sees it: who it is, and what may be done with it."""

    def __init__(self, ns: "Dispatcher", sid: str, user: Any) -> None:
        self.ns, self.sid, self.user = ns, sid, user

    @property
    def connected(self) -> bool:
        """Whether the connection is still open. O(1) dict lookups: safe from a worker thread too."""
        return bool(self.ns.server.manager.is_connected(self.sid, self.ns.namespace))

    def still_connected(self) -> None:
        """``Reject`` (one warning line, no traceback) when the connection has gone: nothing more is built for it."""
        if not self.connected:
            raise Reject(GONE)

    async def fresh_user(self) -> Any:
        """The user read again now (``Reject`` if deactivated, deleted or disconnected)."""
        try:
            return await self.ns.current_user(self.sid)
        except KeyError:  # the session is gone: the connection closed meanwhile
            raise Reject(GONE) from None

    async def emit(self, event: str, data: Any) -> None:
        """Send ``event`` to this connection only."""
        await self.ns.emit(event, data, to=self.sid)

    async def enter(self, room: str) -> None:
        """Enter ``room`` (``Reject`` past REALTIME_MAX_ROOMS_PER_CONNECTION)."""
        await self.ns.enter_room(self.sid, room)

    async def leave(self, room: str) -> None:
        await self.ns.leave_room(self.sid, room)

    def is_in(self, room: str) -> bool:
        """Whether this connection is in ``room`` already."""
        return self.sid in self.ns.server.manager.rooms.get(self.ns.namespace, {}).get(room, {})

    async def set(self, key: str, value: Any) -> None:
        """Keep ``value`` in this connection's session (per-client state lives there, never in globals)."""
        (await self.ns.get_session(self.sid))[key] = value


Handler = Callable[[Client, Any], Awaitable[Ack | None]]


@dataclass(frozen=True)
class Event:
    payload: type[Payload]
    handler: Handler


_events: dict[str, Event] = {}


def client_event(name: str, payload: type[Payload] = Empty) -> Callable[[Handler], Handler]:
    """Register ``async handler(client, payload) -> ack fields`` for client event ``name``.

    The payload is validated against ``payload`` first; raise ``Reject("reason")`` to refuse.
    The acknowledgement is ``{"ok": true, **returned}``. One handler per name: a second
    registration of a name is a programming error (``ValueError``).
    """

    def register(handler: Handler) -> Handler:
        if name in _events:
            raise ValueError(f"client event {name!r} is registered twice")
        _events[name] = Event(payload, handler)
        return handler

    return register


def registered() -> dict[str, Event]:
    """The registered client events, by name (a copy)."""
    return dict(_events)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg']}")
    return "invalid payload: " + "; ".join(parts)


def parse(model: type[Payload], args: tuple[Any, ...]) -> Payload:
    """The single payload argument, checked against ``model``; ``Reject`` with the reason otherwise."""
    if len(args) > 1:
        raise Reject(f"expected one payload object, got {len(args)} arguments")
    data = args[0] if args else None
    size = len(json.dumps(data, default=repr))
    if size > settings.REALTIME_MAX_EVENT_PAYLOAD_BYTES:
        raise Reject(f"payload too large: {size} bytes (limit {settings.REALTIME_MAX_EVENT_PAYLOAD_BYTES})")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Reject(f"payload must be an object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Reject(_describe(error)) from None


class Dispatcher(socketio.AsyncNamespace):
    """Routes every client event through the rate limit, the in-flight bound, ``parse``, the user lookup and the registered handler."""

    async def trigger_event(self, event: str, *args: Any) -> Any:
        sid, data = args[0], args[1:]
        # The server's own connect and disconnect come while the connection is being set up or torn
        # down; a *client* event by those names is refused like any unknown one. "Not connected" does
        # not tell them apart: a client's "connect" still queued when its connection closes would
        # run the connect handler (and its refusal escape the event's task).
        if event in ("connect", "disconnect") and self._setting_up_or_tearing_down(sid, event):
            return await super().trigger_event(event, *args)
        try:
            session = await self.get_session(sid)
        except KeyError:
            return None  # the connection closed while this event waited: nobody to answer
        # A client can name an event with any JSON value: only a string can be one of ours, and
        # only its head is shown (str() of a deeply nested value could itself fail).
        name = repr(event[:100]) if isinstance(event, str) else f"<{type(event).__name__}>"
        try:
            # First, before anything costs: no payload parsing, no database for a flood.
            if not limits.take_event(session):
                return self._rate_limited(sid, session, name)
            session["_refused_in_a_row"] = 0
            # Every event runs as its own task: without a bound, one connection under the rate limit
            # could still queue many costly handlers (snapshot builds). Checked and counted with no
            # await in between, so concurrent events of one connection cannot both take the last place.
            in_flight = session.get("_in_flight", 0)
            if in_flight >= settings.REALTIME_MAX_EVENTS_IN_FLIGHT:
                return self._busy(sid, session, name)
            session["_in_flight"] = in_flight + 1
            session["_busy_in_a_row"] = 0
            try:
                return await self._dispatch(sid, session, event, name, data)
            finally:
                session["_in_flight"] -= 1
        except Reject as refusal:
            log.warning("refused %s from %s: %s", name, sid, refusal)
            return {"ok": False, "error": str(refusal)}
        except Exception:
            log.exception("handler for %s failed", name)
            return {"ok": False, "error": "internal error"}

    async def _dispatch(self, sid: str, session: dict[str, Any], event: Any, name: str, data: tuple[Any, ...]) -> Ack:
        entry = _events.get(event) if isinstance(event, str) else None
        if entry is None:
            raise Reject(f"unknown event: {name}")
        payload = parse(entry.payload, data)
        user = await self.current_user(sid, session)
        with bus.tracking_sends() as sent:  # acked once what it sent on commit has left (as a request's answer)
            answer = await entry.handler(Client(self, sid, user), payload) or {}
        await bus.all_sent(sent)
        return {"ok": True, **answer}

    def _busy(self, sid: str, session: dict[str, Any], name: str) -> Ack:
        busy = session["_busy_in_a_row"] = session.get("_busy_in_a_row", 0) + 1
        if busy == 1:  # once per run of refusals, not once per event
            log.warning("refused %s from %s: %d events in flight", name, sid, settings.REALTIME_MAX_EVENTS_IN_FLIGHT)
        return {"ok": False, "error": BUSY}

    def _setting_up_or_tearing_down(self, sid: str, event: str) -> bool:
        manager = self.server.manager
        pending = manager.pending_connect if event == "connect" else manager.pending_disconnect
        return sid in pending.get(self.namespace, ())

    def _rate_limited(self, sid: str, session: dict[str, Any], name: str) -> Ack:
        refused = session["_refused_in_a_row"] = session.get("_refused_in_a_row", 0) + 1
        if refused == 1:  # once per run of refusals, not once per flooded event
            log.warning("refused %s from %s: rate limited", name, sid)
        if refused >= settings.REALTIME_EVENT_ABUSE_DISCONNECT:
            socket = self.server.eio.sockets.get(self.server.manager.eio_sid_from_sid(sid, self.namespace))
            if socket is not None:
                limits.drop(socket, f"{refused} events in a row over the rate limit")
        return {"ok": False, "error": "rate limited"}

    async def current_user(self, sid: str, session: dict[str, Any] | None = None) -> Any:
        """The connection's user, read fresh so deactivation and staff changes apply at once."""
        if session is None:
            session = await self.get_session(sid)
        user = await database_sync_to_async(User.objects.filter(pk=session.get("user_id"), is_active=True).first)()
        if user is None:
            raise Reject("not authenticated")
        return user
