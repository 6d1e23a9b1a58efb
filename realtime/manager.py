"""Client managers of a serving process: in memory, or python-socketio's Redis manager between nodes.

The Redis manager is python-socketio's own ``AsyncRedisManager``; this subclass
only adds what a fleet needs: room operations (see ``room_ops``) on every node, an
outage logged once rather than per message, room operations held through an
outage and published in order once Redis is back, a reconnect backoff capped
at a few seconds so cross-node delivery resumes promptly, and a subscription that
counts only once Redis confirms it and is pinged when quiet (``subscription``).
"""

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from functools import partial
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
import socketio
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from engineio import packet as eio_packet
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError
from socketio import packet as sio_packet
from socketio.redis_manager import parse_redis_sentinel_url

from . import direct_write, history, limits, lost, room_ops, sentinel, subscription
from .history import Position
from .redis_history import RedisHistory, stamp_args
from .redis_pool import FairBlockingConnectionPool, without_maintenance_notifications

log = logging.getLogger(__name__)
MAX_BACKOFF = 5.0
# Room operations held during a Redis outage (each a small dict); beyond, newer ones are lost and logged at error.
OP_BACKLOG = 10_000
PUBLISH_TIMEOUT = 5.0  # seconds; a timed-out operation is kept and may arrive twice (operations are idempotent)
# Connections of REALTIME_REDIS_CONNECTIONS that joins' history reads leave to everything else besides the
# subscription (broadcasts, room operations, the outage watcher's pings and drain): in a storm of joins those then
# wait behind each other only (the pool is first come first served, ``redis_pool``), never behind every join.
READ_HEADROOM = 4
MIN_REDIS_CONNECTIONS = 1 + READ_HEADROOM + 1  # the subscription's, the headroom, one for reads
# Redis must answer this long before held operations go out: every node's listener has resubscribed by then.
SETTLE = MAX_BACKOFF + 1.0
# A loss this node recorded in the database waits this long for this node to repair it (then deletes it) before
# any server may: so the repair happens once, and still happens if this node ends first.
REPAIR_GRACE = 3 * SETTLE
SENT, ECHOED, DELIVERED_HERE = "sent", "echoed", "delivered here"  # a broadcast's stamp, as this node knows it (_stamps)
# python-socketio's own cross-node messages that change rooms or connections (kept like ``room_ops`` in an outage).
ROOM_METHODS = frozenset({"disconnect", "enter_room", "leave_room", "close_room"})


class FastManager(socketio.AsyncManager):
    """python-socketio's manager with a broadcast that costs one encoding, not one task per recipient.

    The stock ``emit`` creates an asyncio task (and awaits it) for every recipient. Here the
    packet is encoded once and, for each connection, either written straight to its websocket
    (uvicorn, see ``direct_write``) or put on its outgoing queue (what engine.io's ``socket.send``
    does, minus the task), whose writer sends it as usual. Emits with an acknowledgement
    callback (one recipient) take the stock path. Either way what a connection holds unsent is
    bounded (``limits.admit``): one that stopped reading is dropped, not buffered for. A direct
    write that fails moves its connection to the queue; the broadcast goes on to the others.
    """

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None, callback: Any = None,
                   to: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if callback is not None:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
        room = to or room
        if namespace not in self.rooms:
            return None
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in (encoded if isinstance(encoded, list) else [encoded])]
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        sockets = self.server.eio.sockets
        frame: bytes | None = None
        bound = settings.REALTIME_MAX_BUFFERED_BYTES  # read once per broadcast: the loop below is per recipient
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            if len(packets) == 1:
                try:
                    protocol = direct_write.protocol_for(socket)
                    if protocol is not None:  # a websocket-born connection: always direct, so always in order
                        frame = frame or direct_write.text_frame(packets[0].encode())
                        # O(1) per recipient: the transport's buffer size, the queue's byte count, a timestamp.
                        if not direct_write.closing(protocol) and limits.admit(socket, limits.unsent(socket), len(frame), bound):
                            direct_write.send(protocol, frame)
                        continue
                except Exception as error:  # noqa: BLE001  (one recipient's failure must not cost the rest their frame)
                    direct_write.abandon(socket, error)  # this connection takes the queue, from this frame on
            for pkt in packets:  # engine.io packets cache their encoding: shared by every recipient
                socket.queue.put_nowait(pkt)  # limits.OutgoingQueue bounds what it holds
        return None

    async def publish_op(self, op: dict[str, Any]) -> None:
        """Apply a room operation (see ``room_ops``) on every node: here, the only one."""
        await room_ops.apply(self.server, op)


class LocalManager(FastManager):
    """One server process: broadcasts to recoverable rooms are numbered and kept here (``history.MemoryHistory``)."""

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None, callback: Any = None,
                   to: Any = None, **kwargs: Any) -> None:  # fmt: skip
        room = to or room
        if callback is None and namespace == "/" and history.recoverable(room):
            # On the event loop, with no await before the broadcast: numbered in the order sent.
            data = history.memory().stamp(room, event, history.unstamped_object(room, data))
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)


class RedisManager(socketio.AsyncRedisManager, FastManager):
    """python-socketio's Redis manager, plus room operations on every node and an outage that loses none of them.

    Broadcasts to recoverable rooms are numbered, kept and published by Redis in one step
    (``redis_history``) and delivered to every node, this one included, from its subscription:
    every node sends a room's broadcasts in the same order, the order of their numbers.

    During an outage local clients are served as usual (unnumbered). Emits for other nodes are
    lost, but never silently: once Redis is back the fleet's epoch is replaced (no older
    ``since`` is honoured) and every node's clients are told to resync (``realtime:resync``;
    clients that do not follow the recovery protocol are disconnected, so they re-join). A node
    whose subscription broke does the same for its own clients. Room operations
    (``room_ops``, and python-socketio's own disconnect / room messages) wait in a bounded
    backlog. Redis pub/sub reaches only nodes subscribed at that moment, so the backlog goes
    out, in order and before anything newer, only once Redis has answered for ``SETTLE``
    seconds: longer than any node's reconnect backoff, so every node listens again. While one
    is held, broadcasts stay on this node as during an outage (and are repaired after the drain):
    numbered, another node would deliver them before it.
    """

    def __init__(self, url: str, channel: str) -> None:
        if settings.REALTIME_REDIS_CONNECTIONS < MIN_REDIS_CONNECTIONS:
            # Fewer, and joins' reads (at least one) would take the headroom kept for broadcasts and the watcher.
            raise ImproperlyConfigured(
                f"REALTIME_REDIS_CONNECTIONS is {settings.REALTIME_REDIS_CONNECTIONS}; with REDIS_URL set it must be at least "
                f"{MIN_REDIS_CONNECTIONS}: the subscription's, {READ_HEADROOM} for broadcasts, room operations and the outage "
                "watcher, and one or more for joins' history reads"
            )
        options = {"sentinel_kwargs": self._sentinel_options(url)} if "sentinel" in urlparse(url).scheme else None
        super().__init__(url, channel=channel, redis_options=options)
        # Outage state. Each implies the next, and only _watch clears them, together, under _publishing, so that
        # nothing numbered overtakes a held room operation:  (_unsent or _backlog) -> _numbering_down -> _outage.
        # _outage: a Redis call failed (_down); a watcher runs until the outage ends.
        # _numbering_down: broadcasts reach this node's clients only, each recorded as a loss (set by _lost, and by
        #   _keep: numbered, they would overtake the held room operation on another node).
        # _unsent: a repair is owed (a new epoch and a fleet-wide resync); _repair clears it first and restores it
        #   on failure, so a loss meanwhile is not missed.
        # _backlog: held room operations, at most OP_BACKLOG (beyond: counted in _lost_ops).
        # _publishing: FIFO; taken by the watcher's rounds and by publishes during an outage, passed through by
        #   emit (so a broadcast waits behind them).
        self._outage = False
        self._backlog: collections.deque[dict[str, Any]] = collections.deque()
        self._lost_ops = 0
        self._publishing = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._history: RedisHistory | None = None
        self._unsent = False
        self._numbering_down = False
        # This node's broadcasts by stamp id (oldest first, at most OP_BACKLOG): SENT to Redis and not answered yet,
        # ECHOED meanwhile (delivered here from the subscription), or DELIVERED_HERE unnumbered after the stamp failed
        # or timed out (its echo, if Redis runs it after all, is skipped). A broadcast so reaches this node's clients once.
        self._stamps: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._recorded: dict[str, asyncio.Future[list[int]]] = {}  # rooms recorded as lost during this outage -> the write (its rows)
        self._repaired: list[int] = []  # rows of losses repaired here, to delete once the outage is over
        self._recovering: asyncio.Task[None] | None = None
        # Set while this node's subscription is up: a joiner's position is read only then, or a broadcast
        # numbered after it could be published before the subscription and never reach the joiner.
        self._subscribed = asyncio.Event()
        # A join could not read history while the subscription was not up: it got a snapshot without a marker, read
        # before the subscription, so what other nodes publish until it is up never reaches it and no gap shows.
        # This node's watchers resync once it is up (a broken subscription does that anyway).
        self._joined_unsubscribed = False
        # This node's listener has started (python-socketio starts it with the first connection): from then on, while
        # it is not subscribed, this node's broadcasts also reach its clients directly (``_hearing``). The last
        # subscription attempt Redis refused (an ACL): not an outage (Redis answers, publishes go out), but joins get
        # their snapshot at once instead of waiting for a subscription that will not come by waiting.
        self._listener_started = False
        self._subscription_refused = False
        # With a Sentinel URL: the task that follows Sentinel's failovers (``sentinel``), and whether the next failure
        # is the pool's connections dropped for one (logged as that, not as Redis unreachable).
        self._failovers: asyncio.Task[None] | None = None
        self._switching = False
        self._foreign_seen = False  # something not a node's was published on the channel: logged the first time only
        self._switched_to: tuple[str, int] | None = None  # the master this server last dropped its connections for
        # The outage watcher's last ping failed (no reply within PUBLISH_TIMEOUT, or any error); cleared by the next
        # ping answered, or by a new subscription. Meanwhile a join's history reads fail at once, rather than each
        # waiting PUBLISH_TIMEOUT, timing out and falling back to a snapshot without markers. Not keyed on _outage:
        # that stays True while Redis answers again (a brief subscription break, SETTLE), and reads succeed then.
        self._ping_failed = False
        # FIFO; the subscription holds one connection of the pool for good.
        self._reads = asyncio.Semaphore(settings.REALTIME_REDIS_CONNECTIONS - 1 - READ_HEADROOM)

    @staticmethod
    def _sentinel_options(url: str) -> dict[str, Any]:
        """Options of the clients that ask the Sentinels for the master. A master lookup tries them in turn and is
        itself bounded by PUBLISH_TIMEOUT (the caller's): each gets a share of it, and no retry (redis-py's default,
        3 with up to 10 s between), so one down or hung is passed over for the next in time."""
        share = PUBLISH_TIMEOUT / (len(parse_redis_sentinel_url(url)[0]) + 1)
        return {"socket_timeout": share, "socket_connect_timeout": share, "retry": Retry(NoBackoff(), 0)}

    def _redis_connect(self) -> None:
        # A blocking pool: a burst of joins (a reconnect storm) waits for one of REALTIME_REDIS_CONNECTIONS instead
        # of failing with "Too many connections" and sending snapshots without markers; first come first served.
        if "sentinel" in urlparse(self.redis_url).scheme:
            return super()._redis_connect()
        pool = FairBlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=settings.REALTIME_REDIS_CONNECTIONS,
            timeout=PUBLISH_TIMEOUT,
            **without_maintenance_notifications(),
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True
        return None

    @property
    def numbering(self) -> RedisHistory:
        if self.redis is None:
            self._redis_connect()
        if self._history is None or self._history.redis is not self.redis:  # python-socketio replaces its client on reconnect
            self._history = RedisHistory(self.redis)
        return self._history

    async def emit(self, event: str, data: Any, namespace: Any = None, room: Any = None, skip_sid: Any = None, callback: Any = None,
                   to: Any = None, **kwargs: Any) -> None:  # fmt: skip
        room = to or room
        if kwargs.get("ignore_queue") or callback is not None or (namespace or "/") != "/" or not history.recoverable(room):
            return await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
        data = history.unstamped_object(room, data)
        # Encoded before any Redis call: a payload that is not JSON is the caller's error, never an outage. Its own
        # host_id: this node delivers it from its subscription (not skipped as its own), and can recognise its echo.
        stamp_id, echoed = f"stamp:{secrets.token_hex(8)}", None  # None: never sent to Redis
        keys, argv = stamp_args(room, event, data, host_id=stamp_id, skip_sid=skip_sid)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                # Behind a drain or repair under way (the lock is FIFO; free, it costs no suspension): the room
                # operations it holds or that wait for it go out first, and a repair's new epoch is in place.
                async with self._publishing:
                    pass
                if not self._numbering_down:
                    self._stamps[stamp_id] = SENT
                    try:
                        await self.numbering.stamp(keys, argv)
                    finally:
                        echoed = self._stamps.pop(stamp_id, SENT) == ECHOED
                    if not echoed and not self._hearing():
                        # Numbered, and every other node has it; this one does not hear Redis now (its listener
                        # resubscribing, or refused): its clients get it directly, and its echo, if any, is skipped.
                        await self._deliver_here(event, data, room, skip_sid, stamp_id, sent=True)
                    return None  # else delivered here too, from the subscription, in the room's order
        except Exception as error:
            self._down(error)  # and below: lost
        except asyncio.CancelledError:
            # Cancelled before Redis answered (a crawl stopped mid-progress, a caller's own timeout): perhaps numbered
            # nowhere, and with nothing recorded no watcher would resync. Redis may be well: no outage, the room alone
            # is repaired. (At shutdown, broadcasts under way are waited for instead: ``bus.finish_sends``.)
            if not echoed:
                await self._deliver_here(event, data, room, skip_sid, stamp_id, sent=echoed is not None)
                await self._cancelled(room)
            raise
        if echoed:
            return None  # Redis ran it after all (the reply was late): it reached every node, this one included
        # Numbering is off (Redis failed, or a held room operation goes first), or Redis or the wait behind a drain
        # timed out: this node's clients get it now, unnumbered; the other nodes' resync later. The loss is in the
        # database before this returns (a request's answer waits for it): a server killed then is repaired too.
        recorded = self._lost(RuntimeError("Redis unreachable"), room=room)
        await self._deliver_here(event, data, room, skip_sid, stamp_id, sent=echoed is not None)  # first: never suspends
        await asyncio.wait([recorded], timeout=PUBLISH_TIMEOUT)

    def _hearing(self) -> bool:
        """Whether this node hears what is published: its listener is subscribed (or has not started: no clients yet)."""
        return self._subscribed.is_set() or not self._listener_started

    async def _deliver_here(self, event: str, data: Any, room: str, skip_sid: Any, stamp_id: str, *, sent: bool) -> None:
        """This node's clients get the broadcast now, directly (never suspends). If it was ``sent`` to Redis, Redis may
        still run it or have run it (hung, then resumed): its echo is not delivered here again."""
        if sent:
            self._stamps[stamp_id] = DELIVERED_HERE
            if len(self._stamps) > OP_BACKLOG:
                self._stamps.popitem(last=False)  # the oldest: an echo that never came (that stamp never ran)
        await FastManager.emit(self, event, data, "/", room=room, skip_sid=skip_sid)

    async def _cancelled(self, room: str) -> None:
        """A broadcast to ``room`` cancelled before Redis answered: the room recorded as lost, for whichever server
        looks first (``lost.watch``) to forget its history and have its watchers resync, on every node. Waited for
        (bounded) before the cancellation goes on."""
        log.warning("a broadcast to %r was cancelled before Redis numbered it: its room is recorded as lost", room)
        await lost.record_rooms_within([room], PUBLISH_TIMEOUT)

    # The history backend of this node (``history.Backend``), bounded in time like every Redis call here.
    async def position(self, room: str, *, since: tuple[str, int] | None, budget: int) -> Position:
        if self._numbering_down:
            since = None  # this node sent broadcasts the history lacks: a snapshot, never "nothing missed"
        try:
            self._refuse_if_ping_failed()
            if self._subscription_refused:
                raise ConnectionError("Redis refuses this server's subscription: history is out of reach")
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._subscribed.wait()
                async with self._reads:
                    self._refuse_if_ping_failed()  # again: the ping may have failed while this read queued
                    return await self.numbering.position(room, since=since, budget=budget)
        except BaseException:
            self._joined_unsubscribed |= not self._subscribed.is_set()
            raise

    async def generation(self, user_id: int) -> str:
        try:
            self._refuse_if_ping_failed()
            async with asyncio.timeout(PUBLISH_TIMEOUT), self._reads:
                self._refuse_if_ping_failed()  # again: the ping may have failed while this read queued
                return await self.numbering.generation(user_id)
        except BaseException:
            self._joined_unsubscribed |= not self._subscribed.is_set()
            raise

    def _refuse_if_ping_failed(self) -> None:
        # Called inside the reads' try: a read refused here still counts for _joined_unsubscribed. Only publishes and
        # the listener start an outage (and so the pings), never a failed read: a read can fail with Redis well (a
        # pool exhausted by a join storm), and an outage holds room operations. So a Redis that hangs while this
        # node publishes nothing costs each join PUBLISH_TIMEOUT until the subscription's heartbeat finds the hang
        # (``subscription``: within about 20 s).
        if self._ping_failed:
            raise ConnectionError("Redis does not answer (outage): history is out of reach")

    # Writes that void since tokens: one that does not reach Redis is a loss (``_lost``), repaired once it is back.
    async def bump(self, user_id: int | None) -> None:
        await self._voiding(self.numbering.bump(user_id))

    async def forget_room(self, room: str) -> None:
        await self._voiding(self.numbering.forget_room(room))

    async def replace_epoch(self) -> None:
        await self._voiding(self.numbering.replace_epoch())

    async def _voiding(self, write: Coroutine[Any, Any, None]) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await write
        except Exception as error:
            await asyncio.wait([self._lost(error)], timeout=PUBLISH_TIMEOUT)  # in the database before anyone is answered
            raise

    def _lost(self, error: Exception, *, room: str = "") -> asyncio.Future[list[int]]:
        """Something history needed did not reach Redis (a broadcast to ``room``; "": a token voiding): as soon as
        Redis answers, a new epoch and every node's watchers resync (``_watch``). Also written to the database
        (``lost``): if this process ends first, another server repairs it. Returns that write (done once it is in)."""
        self._down(error)
        self._numbering_down = True
        self._unsent = True
        if room not in self._recorded:  # once per room and outage; repaired by this node, or if it ends, by another
            # Off asgiref's one ORM thread (thread_sensitive=False): the loss is written even while joins queue there.
            record = database_sync_to_async(partial(lost.record_rooms, [room], repair_after=REPAIR_GRACE), thread_sensitive=False)
            self._recorded[room] = asyncio.ensure_future(record())
        return self._recorded[room]

    def _resync_message(self) -> dict[str, Any]:
        return {"method": "emit", "event": room_ops.OP_EVENT, "data": [room_ops.resync()], "namespace": "/", "room": None,
                "host_id": self.host_id}  # fmt: skip

    async def _subscribed_again(self, *, broken: bool) -> None:
        """The subscription is up: a restarted Redis (another run id) gets a new epoch (it may have come back from a
        dump, numbers rolled back under the old one); if the subscription broke, or a join went without a marker
        before it was up, this node's watchers resync."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                run_id = (await self.redis.info("server"))["run_id"]
                await self.numbering.claim_epoch(run_id)
        except Exception as error:  # noqa: BLE001  (Redis went again: the next subscription tries again)
            log.warning("could not check the history epoch after (re)subscribing: %s", error)
        if broken or self._joined_unsubscribed:
            # Broadcasts published meanwhile never reached this node: its watchers reload. The other nodes
            # missed nothing, and Redis's history is intact, so the epoch stays and their since stays good.
            self._joined_unsubscribed = False
            await room_ops.apply(self.server, room_ops.resync())

    async def publish_op(self, op: dict[str, Any]) -> None:
        """Apply a room operation here and on every other node."""
        await super().publish_op(op)
        await self._publish(
            {"method": "emit", "event": room_ops.OP_EVENT, "data": [op], "namespace": "/", "room": None, "host_id": self.host_id}
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        stamp_id = message.get("host_id")
        if self._stamps and isinstance(stamp_id, str) and stamp_id in self._stamps:
            if self._stamps[stamp_id] == DELIVERED_HERE:
                del self._stamps[stamp_id]
                return  # the echo of a broadcast this node's clients already got unnumbered (its stamp timed out)
            self._stamps[stamp_id] = ECHOED  # delivered now: if its stamp times out yet, not delivered again
        if message.get("event") == room_ops.OP_EVENT:
            data = message.get("data")
            await room_ops.apply(self.server, data[0] if isinstance(data, list) and data else data)  # apply() refuses malformed ops
        else:
            await super()._handle_emit(message)

    def _down(self, error: Exception, *, cause: str = "Redis unreachable") -> None:
        """An outage starts (logged once, with its first ``cause``), unless one is under way; its watcher runs."""
        if self._switching:  # the first failure after the pool's connections were dropped for a failover is that
            cause, self._switching = "Sentinel switched the master", False
        if not self._outage:
            self._outage = True
            log.error("%s (%s): serving local clients only, until this server hears Redis again", cause, error)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    @staticmethod
    def _is_room_op(data: dict[str, Any]) -> bool:
        return data.get("method") in ROOM_METHODS or (data.get("method") == "emit" and data.get("event") == room_ops.OP_EVENT)

    def _keep(self, data: dict[str, Any]) -> None:
        """Hold an unpublished room operation for when Redis is back; emits are let go."""
        if not self._is_room_op(data):
            return
        # Broadcasts go to this node's clients only until it is out (recorded as losses, repaired after the drain):
        # numbered, another node would deliver them before it (a revoked member would still get them).
        self._numbering_down = True
        if len(self._backlog) >= OP_BACKLOG:
            self._lost_ops += 1
            if self._lost_ops == 1:
                log.error("Redis outage: %d room operations are held; newer ones are lost, the first: %.300r", OP_BACKLOG, data)
            return
        self._backlog.append(data)

    async def _send(self, data: dict[str, Any]) -> Any:
        if self.redis is None:
            self._redis_connect()  # before the listener's first connect; afterwards its client reconnects by itself
        # Bounded: a Redis that stopped answering must not hold the publishers (or the backlog's drain) for ever.
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            return await self.redis.publish(self.channel, self.json.dumps(data))

    async def _reachable(self) -> bool:
        try:
            if self.redis is None:
                self._redis_connect()
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self.redis.ping()
        except Exception:
            self._ping_failed = True
            return False
        self._ping_failed = False
        return True

    async def _watch(self) -> None:
        """During an outage: once Redis answers (for SETTLE seconds if room operations are held), publish them, repair
        the losses (again if one happens meanwhile), then end the outage."""
        loop = asyncio.get_running_loop()
        backoff, back_since = 0.1, None
        while True:
            # A round: Redis not answering -> back off, SETTLE restarts; room operations held and SETTLE not over ->
            # wait; drain or repair failed -> back off, SETTLE restarts; done with work left (a send in flight failed,
            # a loss meanwhile) -> again in 0.5 s; done and clean -> end the outage, delete the repaired rows.
            await asyncio.sleep(backoff if back_since is None else 0.5)
            if not await self._reachable():
                backoff, back_since = min(backoff * 2, MAX_BACKOFF), None
                continue
            back_since = back_since or loop.time()
            async with self._publishing:
                # Held room operations (revocations) go out first, once every node listens again (SETTLE);
                # then the broadcasts numbered nowhere are repaired and numbering resumes.
                if self._backlog and loop.time() - back_since < SETTLE:
                    continue
                answered = await self._drain() and (not self._unsent or await self._repair())
                # Ended only with nothing held or unrepaired left: a send that failed during the repair keeps its
                # room operation (and a loss meanwhile sets _unsent), and the next round, 0.5 s on, takes them.
                if answered and not self._unsent and not self._backlog:
                    # Still under the lock: a room operation sent meanwhile waits for it, and a broadcast waits behind
                    # that (see emit), so nothing numbered overtakes a room operation held or sent during the repair.
                    self._numbering_down = self._outage = False
                    log.warning("Redis is back: cross-node delivery resumed")
            if not self._outage:
                await self._forget_repaired()  # outside the lock: room operations and broadcasts flow meanwhile
                if not self._outage:
                    return
                # Redis failed again meanwhile (_down found this watcher running): it carries on, from the start.
                backoff, back_since = 0.1, None
                continue
            if not answered:  # Redis failed during the round (or refuses writes): back off, then SETTLE again
                backoff, back_since = min(backoff * 2, MAX_BACKOFF), None

    async def _repair(self) -> bool:
        """After the drain: broadcasts were numbered nowhere (sent here only) or tokens not voided, so a new epoch (no
        since from before is honoured) and every node's watchers resync; the losses' rows move to ``_repaired``.
        False if Redis refused (the losses are kept for the next round). Numbering resumes in ``_watch``. A node
        whose subscription is not back yet misses the resync, but resyncs its own watchers when it resubscribes."""
        # Taken before the awaits below: a loss during them sets _unsent again and records its room anew.
        self._unsent, recorded, self._recorded = False, self._recorded, {}
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self.numbering.replace_epoch()
                await self._send(self._resync_message())
        except Exception as error:  # noqa: BLE001
            self._unsent, self._recorded = True, {**self._recorded, **recorded}
            log.warning("could not replace the history epoch yet: %s", error)
            return False
        # A write still under way leaves its rows: another server repairs them later (one more resync, nothing lost).
        self._repaired += [pk for write in recorded.values() if write.done() and not write.cancelled() and not write.exception()
                           for pk in write.result()]  # fmt: skip
        log.warning("Redis answers again: broadcasts numbered nowhere during the outage, every watcher told to resync")
        return True

    async def _forget_repaired(self) -> None:
        """Delete the rows of the losses repaired (``lost``): no other server needs to repair them."""
        done, self._repaired = self._repaired, []
        if not done:
            return
        try:
            # Off asgiref's one ORM thread (thread_sensitive=False), as the loss's record was written; bounded, so a
            # database that stopped answering cannot hold the watcher (a new outage would find it busy here).
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await database_sync_to_async(lost.forget, thread_sensitive=False)(done)
        except Exception:  # noqa: BLE001  (the rows stay: another server repairs them later, one more resync)
            # Raised, it would end this watcher even if a new outage began meanwhile (_down found it running):
            # that outage would then never end, this node's broadcasts unnumbered and for its own clients only.
            log.exception("could not delete the repaired losses' rows: another server repairs them again")

    async def _drain(self) -> bool:
        """Publish the backlog in order (with ``_publishing`` held); False if Redis went away again."""
        sent = 0
        while self._backlog:
            try:
                await self._send(self._backlog[0])
            except Exception as error:
                log.warning("Redis went away again while publishing held room operations: %s", error)
                return False
            self._backlog.popleft()
            sent += 1
        if sent:
            log.warning("Redis outage over: %d held room operation(s) published", sent)
        if self._lost_ops:
            log.error("Redis outage: %d room operation(s) over the backlog of %d were lost", self._lost_ops, OP_BACKLOG)
            self._lost_ops = 0
        return True

    async def _publish(self, data: Any) -> Any:
        # One attempt per message: local clients were already served, an outage is logged
        # once, and what must not be lost waits in the backlog (see the class docstring).
        if not self._outage:
            return await self._send_or_keep(data)
        # A drain under way finishes first: order holds. An emit for the other nodes (not a room operation) waits at
        # most PUBLISH_TIMEOUT for it (a reply to this node's own connection passes here too), then is let go.
        wait = contextlib.nullcontext() if self._is_room_op(data) else asyncio.timeout(PUBLISH_TIMEOUT)
        try:
            async with wait, self._publishing:
                if self._outage:
                    self._keep(data)
                    return None
                # Sent before the lock goes: a broadcast waiting behind it (see emit) must not overtake it.
                return await self._send_or_keep(data)
        except TimeoutError:
            return None

    async def _send_or_keep(self, data: Any) -> Any:
        try:
            return await self._send(data)
        except Exception as error:
            self._down(error)
            self._keep(data)
            return None

    async def _listening_client(self) -> None:
        """The client to (re)subscribe with: made once, then the same pool with a new subscription. (python-socketio
        makes a new client per attempt, and the old pool's connections stayed open for good: up to
        REALTIME_REDIS_CONNECTIONS per break of the subscription, a proxy's idle timeout or a CLIENT KILL.) With
        Sentinel too: its pool asks Sentinel for the master on each new connection (a failover: see ``sentinel``)."""
        if self.redis is None:
            self._redis_connect()
            return
        if self.pubsub is not None:
            # Its connection goes back to the pool (and its turn, see redis_pool); broken, there is nothing else to do.
            # Closed before it is replaced: a listener cancelled meanwhile still holds it, to close at shutdown.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await self.pubsub.aclose()
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)

    async def _master_switched(self, event: str) -> None:
        """Sentinel made another server the master (``event``): every connection of the pool is dropped now, not once
        the old master is demoted. Calls in flight there fail (recorded as lost, repaired), the listener subscribes
        on the new master and this node's watchers resync; the new master's run id gives a new epoch."""
        log.warning("Sentinel switched the master (%s): this server leaves the old one now", event)
        pool, parts = self.redis.connection_pool, event.split(" ")
        new = (parts[3], int(parts[4])) if len(parts) == 5 and parts[4].isdigit() else None
        try:
            # The Sentinel the pool asks may learn of the failover from the one that ran it a moment later (their
            # hello messages): dropped before it names the new master, connections would come back to the old one.
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                while new is not None and await pool.get_master_address() != new:  # noqa: ASYNC110  (each round asks Sentinel)
                    await asyncio.sleep(0.1)
        except Exception as error:  # noqa: BLE001  (bounded: the connections are dropped all the same)
            log.warning("the pool's Sentinel does not name %s as the master yet (%r): leaving the old one anyway", new, error)
        if new is not None and new == self._switched_to:
            return  # dropped for this switch already (announced, and found on subscribing too)
        on = self._listening_on()
        if new is not None and pool.master_address != new and pool.master_address == on:
            # The pool's Sentinel still names the master the subscription is on, not the event's: a lagging Sentinel
            # announced a switch back, or the pool's lags; dropped now, the connections would come back here anyway.
            log.warning("the pool's Sentinel still names %s, where this server is: its connections are kept", on)
            return
        self._switched_to = new
        self._switching = True  # the failures this causes are logged as this, not as Redis unreachable
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await pool.disconnect(inuse_connections=True)

    def _listening_on(self) -> tuple[str, int] | None:
        """The (host, port) the subscription's connection is connected to, if it is."""
        connection = getattr(self.pubsub, "connection", None)
        if connection is None or not connection.is_connected:
            return None
        return str(connection.host), int(connection.port)

    async def _redis_answers(self) -> bool:
        """The subscription's ping went unanswered: True if Redis answers on a new connection (the subscription's is
        dead: replaced); else Redis hangs, and the outage starts while the subscription is kept (it delivers
        everything once Redis resumes: dropping it would cost every watcher a resync for nothing).

        A new connection, not one of the pool's: an idle one may be as dead as the subscription's (a NAT that dropped
        them all), and its silence would start an outage while Redis answers."""
        connection = self.redis.connection_pool.make_connection()
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await connection.connect()
                await connection.send_command("PING")
                await connection.read_response()
        except Exception as error:  # noqa: BLE001  (whatever it is, Redis did not answer)
            self._ping_failed = True
            self._down(RedisConnectionError(f"Redis answers no ping, on the subscription nor on a new connection ({error!r:.200})"))
            return False
        finally:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
        return True

    def _foreign_message(self, data: object) -> None:
        """Something not sent by a node (not a JSON object) was published on the channel: dropped, the first one logged."""
        if not self._foreign_seen:
            log.warning("dropped what is not a JSON object on Redis channel %r (%.80r): does another program publish there? "
                        "Further ones are dropped silently", self.channel, data)  # fmt: skip
        self._foreign_seen = True

    async def _redis_listen_with_retries(self):  # type: ignore[no-untyped-def]
        backoff, broken = 0.1, False
        self._listener_started = True
        while True:
            try:
                await self._listening_client()
                if (self._failovers is None or self._failovers.done()) and "sentinel" in urlparse(self.redis_url).scheme:
                    self._failovers = asyncio.get_running_loop().create_task(
                        sentinel.follow_failovers(
                            self.redis.connection_pool,
                            on_switch=self._master_switched,
                            current=self._listening_on,
                            timeout=PUBLISH_TIMEOUT,
                            max_backoff=MAX_BACKOFF,
                        )  # fmt: skip
                    )
                # Confirmed by Redis (the first reply on this connection): from then on every publish reaches us.
                await subscription.subscribe_confirmed(self.pubsub, self.channel, timeout=PUBLISH_TIMEOUT)
                self._subscribed.set()
                if self._subscription_refused:
                    log.warning("Redis allows this server's subscription again: other servers' broadcasts reach it")
                self._ping_failed = self._subscription_refused = self._switching = False
                backoff = 0.1
                if self._recovering is not None:
                    # An earlier subscription's check, if still under way, is superseded by this one's, which resyncs
                    # this node's watchers anyway (a break came between): they do not reload twice in a row.
                    self._recovering.cancel()
                self._recovering = asyncio.get_running_loop().create_task(self._subscribed_again(broken=broken))
                broken = False
                # Raises once a ping goes unanswered while Redis answers elsewhere (a half-open connection).
                async for message in subscription.messages(self.pubsub, timeout=PUBLISH_TIMEOUT, redis_answers=self._redis_answers):
                    if message["type"] == "message" and not _json_object(message["data"]):
                        self._foreign_message(message["data"])
                        continue
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._subscribed.clear()
                self.connected = False
                broken = True
                if isinstance(error, NoPermissionError):
                    # Redis refuses it (an ACL without this channel or SUBSCRIBE) until someone fixes that: logged once.
                    # Not an outage: Redis answers, and publishes (room operations among them) go out as usual.
                    if not self._subscription_refused:
                        log.error("Redis refuses this server's subscription (%s): other servers' broadcasts do not reach "
                                  "its clients until it is allowed (tried again every %g s)", error, MAX_BACKOFF)  # fmt: skip
                    self._subscription_refused = True
                else:
                    half_open = isinstance(error, subscription.SubscriptionLost)  # while Redis answers elsewhere
                    self._down(error, cause="Redis subscription lost" if half_open else "Redis unreachable")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


def _json_object(data: bytes) -> bool:
    """Whether ``data`` can be a node's message (a JSON object, as json.dumps writes it). python-socketio's listener
    would raise on anything else (``'method' in 1``) outside its handlers' ``try`` and start over on a new subscription,
    losing what is published meanwhile. A malformed object is safe: undecodable, it is skipped; decoded, its
    handler's errors are caught."""
    return isinstance(data, bytes) and data.startswith(b"{")


def build_manager() -> socketio.AsyncManager:
    """Redis between nodes when ``REDIS_URL`` is set, else in memory (one process)."""
    if settings.REDIS_URL:
        manager = RedisManager(settings.REDIS_URL, channel=settings.REALTIME_REDIS_CHANNEL)
        history.use(manager)
        return manager
    history.use(history.memory())
    return LocalManager()
