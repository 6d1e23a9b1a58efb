"""History in Redis (``REDIS_URL``): one numbering per room for every node, kept across node restarts.

A broadcast to a recoverable room is numbered, stored and published by one Lua script,
atomically: Redis orders the room's broadcasts, so every node receives them in ``seq``
order, and a joiner's ``since`` is answered from the stream whichever node it reaches.

Keys (prefix ``REALTIME_REDIS_CHANNEL``):

* ``<p>:epoch``: the fleet's epoch. Replaced when a broadcast could not be numbered (an outage:
  ``replace_epoch``) and when Redis restarted (another run id, ``claim_epoch``; without a dump
  it is simply gone): no older ``since`` then matches.
* ``<p>:room:<room>``: the room's own epoch, last seq and history bytes; ``<p>:log:<room>``: a
  stream of its last broadcasts (id ``<seq>-0``), at most ``REALTIME_HISTORY_SIZE`` of them and
  ``REALTIME_SNAPSHOT_FRAME_BYTES`` of JSON (more could never be sent to a joiner). Both expire
  after ``REALTIME_HISTORY_TTL`` seconds without a broadcast.
* ``<p>:gen:<user id>`` / ``<p>:gen:*``: access generations (see ``since_tokens``).

The JSON is spliced, never decoded in Lua: what is published is exactly what Python encoded.
"""

import json
import secrets
from typing import Any

from django.conf import settings

from .history import Position

STAMP = """
local g = redis.call('GET', KEYS[1])
if not g then g = ARGV[1]; redis.call('SET', KEYS[1], g) end
local e = redis.call('HGET', KEYS[2], 'epoch')
if not e then
  e = ARGV[2]; redis.call('HSET', KEYS[2], 'epoch', e, 'bytes', 0); redis.call('DEL', KEYS[3])
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local epoch = g .. '.' .. e
local data = ARGV[5] .. '{"room":' .. ARGV[6] .. ',"epoch":"' .. epoch .. '","seq":' .. seq .. '}}'
redis.call('XADD', KEYS[3], seq .. '-0', 'e', ARGV[10], 'd', data)
-- Bounded in count and bytes, oldest first: more than a joiner could ever be sent is never kept.
local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', #data)
while bytes > tonumber(ARGV[11]) or redis.call('XLEN', KEYS[3]) > tonumber(ARGV[3]) do
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  if not oldest then break end
  redis.call('XDEL', KEYS[3], oldest[1])
  bytes = redis.call('HINCRBY', KEYS[2], 'bytes', -#oldest[2][4])
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[7], ARGV[8] .. data .. ARGV[9])
return {epoch, seq}
"""

POSITION = """
local g = redis.call('GET', KEYS[1])
if not g then g = ARGV[1]; redis.call('SET', KEYS[1], g) end
local e = redis.call('HGET', KEYS[2], 'epoch')
if not e then
  e = ARGV[2]; redis.call('HSET', KEYS[2], 'epoch', e, 'bytes', 0); redis.call('DEL', KEYS[3]); redis.call('EXPIRE', KEYS[2], ARGV[6])
end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local epoch = g .. '.' .. e
if ARGV[3] ~= epoch then return {epoch, seq, 0, {}} end
local s = tonumber(ARGV[4])
if s > seq or seq - s > tonumber(ARGV[5]) then return {epoch, seq, 0, {}} end
if s == seq then return {epoch, seq, 1, {}} end
local entries = redis.call('XRANGE', KEYS[3], (s + 1) .. '-0', '+', 'COUNT', seq - s)
if #entries ~= seq - s or entries[1][1] ~= (s + 1) .. '-0' then return {epoch, seq, 0, {}} end
return {epoch, seq, 1, entries}
"""

# A Redis run (``INFO server`` run_id) the epoch was not made under: Redis restarted, maybe from a dump whose
# numbers roll back under the old epoch. The first node to see the new run replaces the epoch; the others find it done.
CLAIM = """
if redis.call('GET', KEYS[2]) == ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


def _p() -> str:
    return settings.REALTIME_REDIS_CHANNEL


def _keys(room: str) -> list[str]:
    return [f"{_p()}:epoch", f"{_p()}:room:{room}", f"{_p()}:log:{room}"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stamp_args(room: str, event: str, data: dict[str, Any], *, host_id: str | None, skip_sid: Any = None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``STAMP`` for one broadcast, as python-socketio's pub/sub message (its other nodes deliver it)."""
    body = json.dumps(data, separators=(",", ":"))
    data_head = body[:-1] + ("," if body != "{}" else "") + '"_live":'
    message = {"method": "emit", "event": event, "binary": False, "namespace": "/", "room": room, "skip_sid": skip_sid}
    head = json.dumps({**message, "callback": None, "host_id": host_id})[:-1] + ',"data":['
    argv = [
        secrets.token_hex(4),
        secrets.token_hex(4),
        settings.REALTIME_HISTORY_SIZE,
        settings.REALTIME_HISTORY_TTL,
        data_head,
        json.dumps(room),
        settings.REALTIME_REDIS_CHANNEL,
        head,
        "]}",
        event,
        settings.REALTIME_SNAPSHOT_FRAME_BYTES,  # what a joiner may be sent at most: a room keeps no more
    ]
    return _keys(room), argv


def position_args(room: str, since: tuple[str, int] | None) -> tuple[list[str], list[Any]]:
    epoch, seq = since if since is not None else ("", 0)
    argv = [secrets.token_hex(4), secrets.token_hex(4), epoch, seq, settings.REALTIME_HISTORY_SIZE, settings.REALTIME_HISTORY_TTL]
    return _keys(room), argv


def to_position(reply: list[Any], *, asked: bool, budget: int) -> Position:
    epoch, seq, found, entries = _text(reply[0]), int(reply[1]), int(reply[2]), reply[3]
    if not asked or not found:
        return Position(epoch, seq, None)
    missed, size = [], 0
    for _id, fields in entries:
        pairs = dict(zip(map(_text, fields[::2]), fields[1::2], strict=True))
        size += len(pairs["d"])
        if size > budget:
            return Position(epoch, seq, None)  # a snapshot is cheaper to send
        missed.append((_text(pairs["e"]), json.loads(pairs["d"])))
    return Position(epoch, seq, missed)


def generation_keys(user_id: int) -> list[str]:
    return [f"{_p()}:gen:*", f"{_p()}:gen:{user_id}"]


def generation_key(user_id: int | None) -> str:
    return f"{_p()}:gen:{'*' if user_id is None else user_id}"


def to_generation(values: list[Any]) -> str:
    return ":".join(_text(v) if v is not None else "0" for v in values)


class RedisHistory:
    """The async half, for a serving node (its client manager's Redis connection)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._stamp = redis.register_script(STAMP)
        self._position = redis.register_script(POSITION)
        self._claim = redis.register_script(CLAIM)

    async def stamp(self, keys: list[str], argv: list[Any]) -> None:
        """Number, store and publish one broadcast (``stamp_args``) to every node, this one included."""
        await self._stamp(keys=keys, args=argv)

    async def position(self, room: str, *, since: tuple[str, int] | None, budget: int) -> Position:
        keys, argv = position_args(room, since)
        return to_position(await self._position(keys=keys, args=argv), asked=since is not None, budget=budget)

    async def generation(self, user_id: int) -> str:
        return to_generation(await self.redis.mget(generation_keys(user_id)))

    async def bump(self, user_id: int | None) -> None:
        await self.redis.incr(generation_key(user_id))

    async def forget_room(self, room: str) -> None:
        await self.redis.delete(*_keys(room)[1:])

    async def replace_epoch(self) -> None:
        """Broadcasts were lost: no ``since`` from before is honoured."""
        await self.redis.set(f"{_p()}:epoch", secrets.token_hex(4))

    async def claim_epoch(self, run_id: str) -> None:
        """Called on every (re)subscription: a new epoch if Redis restarted since the epoch was made."""
        await self._claim(keys=[f"{_p()}:epoch", f"{_p()}:epoch_run"], args=[run_id, secrets.token_hex(4)])


class SyncRedisHistory:
    """The sync half, for processes that do not serve (commands: ``remote``)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._stamp = redis.register_script(STAMP)

    def stamp(self, room: str, event: str, data: dict[str, Any]) -> None:
        keys, argv = stamp_args(room, event, data, host_id=None)
        self._stamp(keys=keys, args=argv)

    def bump(self, user_id: int | None) -> None:
        self.redis.incr(generation_key(user_id))

    def forget_room(self, room: str) -> None:
        self.redis.delete(*_keys(room)[1:])

    def replace_epoch(self) -> None:
        self.redis.set(f"{_p()}:epoch", secrets.token_hex(4))
