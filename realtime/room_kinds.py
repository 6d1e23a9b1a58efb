"""Room kinds: the rooms clients may enter, who may, and what a joiner is sent.

A kind declares its join and leave events, the payload key naming the room's
subject, the permission rule and the snapshot. realtime registers the two events
and runs every join the same way:

    validate → may_join(user, key) → enter → may_join again (the user read afresh; leave if refused)
    → snapshot to the joiner (subscribed first, snapshot second: no update falls in the gap)

The same rule answers ``recheck`` (a user lost a privilege: each of their rooms is
checked again on every node). A room no kind claims fails closed.
"""

import contextlib
import inspect
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import Field, Strict, create_model

from . import history, rooms, since_tokens
from .dispatcher import GONE, Client, Empty, Payload, Reject, client_event
from .failure_runs import FailureRun
from .history import Position
from .room_ops import RECOVERS
from .snapshots import Frames, Snapshot, send_frames, unsent_bytes

log = logging.getLogger(__name__)
# While Redis is down every join fails to read history at once (all clients reconnecting): log the run, not each join.
_unreachable = FailureRun(log, "room history unreachable: joins get a snapshot instead of what they missed")

Key = Any
SnapshotBuilder = Callable[[Any, Key], Snapshot | Frames | None]


@dataclass(frozen=True)
class RoomKind:
    """One kind of room. Build it with ``room_kind``; ``room(key)`` spells a room of this kind."""

    join: str  # client event that enters, e.g. "join_project"
    leave: str  # client event that leaves
    key: str | None = None  # payload field naming the subject ("project_id"); None: the event takes no payload
    key_type: type = uuid.UUID
    prefix: str = ""  # a keyed room is spelled prefix + str(key); a keyless kind's rooms all start with it
    per_user: Callable[[Any], Sequence[str]] | None = None  # a keyless kind's rooms for one user
    may_join: Callable[[Any, Key], bool] | None = None  # sync (ORM allowed); None: any authenticated user
    snapshot: SnapshotBuilder | None = None  # sync, in a worker thread: sent to the joiner after entering
    live_snapshot: Callable[[Key], Snapshot | None] | None = None  # on the event loop, must not block: tried first
    refusal: str = "not found"  # the same answer for unknown and forbidden: no probing

    def room(self, key: Key) -> str:
        """The room of ``key`` (keyed kinds)."""
        return f"{self.prefix}{key}"

    def rooms_for(self, user: Any, key: Key) -> list[str]:
        if self.key is None:
            found = list(self.per_user(user)) if self.per_user else []
            stray = [room for room in found if not room.startswith(self.prefix) or rooms.is_internal(room)]
            if stray:  # a programming error: refused rather than entering a room another kind (or realtime) owns
                raise ValueError(f"{self.join}: per_user gave {stray!r}, not rooms starting with {self.prefix!r}")
            return found
        return [self.room(key)]

    def parse(self, room: str) -> tuple[bool, Key]:
        """``(True, key)`` when ``room`` is exactly the room of some key of this (keyed) kind."""
        if self.key is None or not room.startswith(self.prefix):
            return False, None
        try:
            key = self.key_type(room[len(self.prefix) :])
        except (TypeError, ValueError, OverflowError):
            return False, None
        return (True, key) if self.room(key) == room else (False, None)  # one spelling per room: "board_01" is not board 1

    @property
    def recoverable(self) -> bool:
        """A kind with a snapshot: its broadcasts are numbered, and a rejoin may be sent just what it missed (``history``)."""
        return self.snapshot is not None or self.live_snapshot is not None

    def claims(self, room: str) -> bool:
        """Whether ``room`` is one of this kind's rooms."""
        return self.parse(room)[0] if self.key is not None else room.startswith(self.prefix) and not rooms.is_internal(room)

    def allows(self, user: Any, key: Key) -> bool:
        """Sync: may ``user`` be in the room of ``key``? Only a True answer admits."""
        return bool(user.is_active) and (self.may_join is None or self.may_join(user, key) is True)


_kinds: list[RoomKind] = []


def _recoverable(room: str) -> bool:
    return any(kind.recoverable and kind.claims(room) for kind in _kinds)


history.set_recoverable(_recoverable)


def room_kind(
    *,
    join: str,
    leave: str,
    key: str | None = None,
    key_type: type = uuid.UUID,
    prefix: str = "",
    per_user: Callable[[Any], Sequence[str]] | None = None,
    may_join: Callable[[Any, Key], bool] | None = None,
    snapshot: SnapshotBuilder | None = None,
    live_snapshot: Callable[[Key], Snapshot | None] | None = None,
    refusal: str = "not found",
) -> RoomKind:
    """Declare a kind of room and register its join and leave client events.

    Keyed kinds (``key="board_id"``): the payload is ``{board_id: <key_type>}``, the room is
    ``prefix + str(key)``, and the acks are ``{ok, board_id}``. Keyless kinds take no payload
    and enter ``per_user(user)``. ``may_join(user, key)`` is checked before entering and again,
    with the user read afresh, after; ``snapshot(user, key)`` builds what the joiner is sent.
    """
    if key is None and per_user is None:
        raise ValueError(f"{join}: a keyless room kind needs per_user")
    for name, given in (("per_user", per_user), ("may_join", may_join), ("snapshot", snapshot), ("live_snapshot", live_snapshot)):
        if inspect.iscoroutinefunction(given):  # a coroutine is truthy: an async may_join would admit everyone
            raise ValueError(f"{join}: {name} must be a plain function (it runs in a worker thread; the ORM is allowed there)")
    kind = RoomKind(join, leave, key, key_type, prefix, per_user, may_join, snapshot, live_snapshot, refusal)
    _check_spelling(kind)
    model: type[Payload] = create_model(f"{join}_payload", __base__=Payload, **{key: (_key_field(key_type), ...)}) if key else Empty
    # A recoverable kind's join may name, per room, the last broadcast it saw: {since: {room: {epoch, seq, token}}}.
    joining = create_model(f"{join}_since", __base__=model, since=(SinceMap | None, None)) if kind.recoverable else model

    @client_event(join, joining)
    async def _join(client: Client, payload: Payload) -> dict[str, Any]:
        value = getattr(payload, key) if key else None
        if "since" in payload.model_fields_set:
            await client.set(RECOVERS, True)  # it follows the recovery protocol: told to resync, never disconnected for it
        return await join_room(kind, client, value, since=getattr(payload, "since", None) or {})

    @client_event(leave, model)
    async def _leave(client: Client, payload: Payload) -> dict[str, Any]:
        value = getattr(payload, key) if key else None
        for room in kind.rooms_for(client.user, value):
            await client.leave(room)
        return _ack(kind, value)

    _kinds.append(kind)
    return kind


def _check_spelling(kind: RoomKind) -> None:
    """Refuse (``ValueError``) a kind whose rooms could be spelled like realtime's own or another kind's.

    Otherwise a client allowed into its own room of one kind (a text key, a tag numbered like a board)
    would receive another kind's room, or name a user's internal room. Two kinds collide when one's
    prefix plus some key can spell the other's prefix plus some key. UUID-keyed kinds may share a
    prefix (project and progress rooms are both a bare UUID): a UUID names one thing only.
    """
    if kind.key is None and not kind.prefix:
        raise ValueError(f"{kind.join}: a keyless room kind needs a prefix its rooms start with")
    internal = [RoomKind("", "", None, str, p) for p in rooms.INTERNAL_PREFIXES]  # realtime's own rooms: any text after
    for other in [*internal, *_kinds]:
        if _collide(kind, other):
            whose = f"{other.join}'s" if other.join else "realtime's own"
            raise ValueError(f"{kind.join}: rooms spelled {kind.prefix!r} + key could be {whose} rooms ({other.prefix!r} + …)")


def _text_after(kind: RoomKind) -> str | None:
    """What may follow the kind's prefix, as a regular expression (None: any text)."""
    if kind.key is None or not issubclass(kind.key_type, int | uuid.UUID):
        return None  # keyless (rooms chosen by code), text or custom keys: anything
    return r"-?[0-9]*" if issubclass(kind.key_type, int) else r"[0-9a-f-]*"


def _collide(a: RoomKind, b: RoomKind) -> bool:
    if a.prefix == b.prefix:
        if a.key_type is b.key_type is uuid.UUID and a.key and b.key:
            return False
        after_a, after_b = _text_after(a), _text_after(b)
        return after_a is None or after_b is None or after_a == after_b
    shorter, longer = (a, b) if b.prefix.startswith(a.prefix) else (b, a)
    if not longer.prefix.startswith(shorter.prefix):
        return False
    pattern = _text_after(shorter)  # can the shorter kind's key begin with the rest of the longer prefix?
    return pattern is None or re.fullmatch(pattern, longer.prefix[len(shorter.prefix) :]) is not None


def _key_field(key_type: type) -> Any:
    """The payload's key as validated: an int key must be a JSON integer in 64 bits ("5", 5.0 and true are refused)."""
    if issubclass(key_type, int) and key_type is not bool:
        return Annotated[int, Strict(), Field(ge=-(2**63), lt=2**63)]
    return key_type


def _ack(kind: RoomKind, key: Key) -> dict[str, Any]:
    """``{key: value}`` as the client would send it: ints stay numbers, anything else (a UUID) is its string."""
    if kind.key is None:
        return {}
    return {kind.key: key if isinstance(key, int | str) else str(key)}


class Since(Payload):
    """The last broadcast a client has of one room: the ``epoch`` and ``token`` of its last marker, the ``seq`` it applied last."""

    epoch: str = Field(..., max_length=64)
    seq: Annotated[int, Strict(), Field(ge=0, lt=2**63)]
    token: str = Field(..., max_length=128)


SinceMap = Annotated[dict[Annotated[str, Field(max_length=200)], Since], Field(max_length=8)]
MARKER = "realtime:joined"


async def join_room(kind: RoomKind, client: Client, key: Key, *, since: dict[str, Since] | None = None) -> dict[str, Any]:
    """Enter the kind's room(s) for ``key``, checked before and after entering, then send what was missed or the snapshot."""
    client.still_connected()
    allowed = database_sync_to_async(kind.allows)
    if not await allowed(client.user, key):
        raise Reject(kind.refusal)
    wanted = kind.rooms_for(client.user, key)
    if any(rooms.is_internal(room) for room in wanted):  # checked at declaration too; never a client's to enter
        raise Reject(kind.refusal)
    entered = [room for room in wanted if not client.is_in(room)]  # a failed rejoin leaves only what it entered
    try:
        for room in entered:
            await client.enter(room)
        # Read after entering, before the check below: whatever is sent to the room from now on reaches this
        # connection, and a revocation committed after the check voids the token (its generation moves on).
        positions = await _positions_or_none(kind, client, wanted, since or {})
        # Checked again with the user read afresh: a revocation committed in between (membership,
        # staff, deactivation) is then either seen here or finds the connection already in the room.
        fresh = await client.fresh_user()
        if not await allowed(fresh, key):
            raise Reject(kind.refusal)
        client.still_connected()
        if positions is None or not await _send_markers(kind, client, key, positions):
            await _send_snapshot(kind, client, key, fresh)  # built for the user as now read, not as before entering
    except BaseException:
        # Whatever failed (a refusal, a database error, a snapshot that could not be built or sent):
        # no room is kept by a join that did not answer ok.
        for room in entered:
            with contextlib.suppress(Exception):
                await client.leave(room)
        raise
    return _ack(kind, key)


async def _positions_or_none(kind: RoomKind, client: Client, wanted: list[str], since: dict[str, Since]) -> list[Any] | None:
    """The rooms' positions, or None (a snapshot, no marker) when the kind is not recoverable or history is out of
    reach (Redis down: broadcasts meanwhile go out unnumbered, and every watcher resyncs once it is back)."""
    if not kind.recoverable:
        return None
    try:
        positions = await _positions(kind, client, wanted, since)
    except Exception as error:  # noqa: BLE001
        _unreachable.failed(error)
        return None
    _unreachable.succeeded()
    return positions


async def _positions(kind: RoomKind, client: Client, wanted: list[str], since: dict[str, Since]) -> list[tuple[str, Position, str]]:
    """Per room: where its broadcasts stand (with what the joiner missed, when its ``since`` is honoured), and its next token."""
    found = history.backend()
    generation = await found.generation(client.user.pk)
    out = []
    for room in wanted:
        given = since.get(room)
        asked = None
        if given is not None and since_tokens.honoured(
            given.token, room=room, epoch=given.epoch, seq=given.seq, user_id=client.user.pk, generation=generation
        ):
            asked = (given.epoch, given.seq)
        position = await found.position(room, since=asked, budget=settings.REALTIME_SNAPSHOT_FRAME_BYTES)
        start = asked[1] if asked is not None and position.missed is not None else position.seq
        token = since_tokens.token(room=room, epoch=position.epoch, user_id=client.user.pk, generation=generation, start=start)
        out.append((room, position, token))
    return out


async def _send_markers(kind: RoomKind, client: Client, key: Key, positions: list[tuple[str, Position, str]]) -> bool:
    """``realtime:joined {join, room, epoch, seq, token, missed}`` per room; True when every room's ``missed`` was
    given (no snapshot is needed), else every ``missed`` is null and the snapshot follows."""
    recovered = all(position.missed is not None for _, position, _ in positions)
    join = {"event": kind.join, **_ack(kind, key)}
    for room, position, token in positions:
        missed = [[event, data] for event, data in position.missed] if recovered and position.missed is not None else None
        marker = {"join": join, "room": room, "epoch": position.epoch, "seq": position.seq, "token": token, "missed": missed}
        await client.emit(MARKER, marker)
    return recovered


async def _send_snapshot(kind: RoomKind, client: Client, key: Key, user: Any) -> None:
    if kind.live_snapshot is not None:
        # Read and emitted with no await in between: it cannot overtake a newer live event.
        current = kind.live_snapshot(key)
        if current is not None:
            await client.emit(current.event, current.data)
            return
    if kind.snapshot is None:
        return
    built = await database_sync_to_async(_build)(kind, client, key, user)
    if built is None:
        raise Reject(GONE)
    event, frames = built
    ns = client.ns
    await send_frames(
        event,
        frames,
        emit=client.emit,
        unsent=lambda: unsent_bytes(ns.server, client.sid, ns.namespace),
        still_connected=client.still_connected,
    )


def _build(kind: RoomKind, client: Client, key: Key, user: Any) -> tuple[str, list[Any]] | None:
    """The snapshot as (event, payloads), built in a worker thread; None when the joiner left meanwhile.

    Many snapshots may wait for that thread: each checks, when its turn comes, that someone still wants it.
    """
    if not client.connected:
        return None
    snapshot = kind.snapshot(user, key) if kind.snapshot else None
    if not client.connected:
        return None
    if snapshot is None:
        return "", []
    if isinstance(snapshot, Frames):
        return snapshot.event, snapshot.frames()
    return snapshot.event, [snapshot.data]


def may_stay(user: Any, room: str) -> bool:
    """Sync: whether ``user`` may still be in ``room``. Internal rooms stay; a room no kind claims fails closed."""
    if rooms.is_internal(room):
        return True
    claimed = False
    for kind in _kinds:
        try:
            if kind.key is None:
                if kind.per_user is not None and room in kind.per_user(user):
                    claimed = True
                    if kind.allows(user, None):
                        return True
                continue
            matches, key = kind.parse(room)
            # Kinds may share a spelling (project and progress rooms are both a bare UUID): any grants it.
            if matches:
                claimed = True
                if kind.allows(user, key):
                    return True
        except Exception:  # noqa: BLE001  (a check that fails grants nothing: the room is left, fail closed)
            log.exception("recheck: %s's check of room %r failed: leaving it", kind.join, room)
            claimed = True
    if not claimed:
        log.warning("recheck: room %r is of no known kind: leaving it", room)
    return False


def rooms_to_leave(*, user_id: int, candidates: Sequence[str]) -> list[str]:
    """Sync: of ``candidates`` (rooms the user's connections are in), those they may no longer be in."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return [room for room in candidates if not rooms.is_internal(room)]
    return [room for room in candidates if not may_stay(user, room)]
