"""Client -> server events. Each handler: payload already validated; check permission, enter the room, then snapshot."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from chat import schemas as chat_schemas
from chat import selectors as chat_selectors
from chat import services as chat_services
from chat.models import ChatSession
from crawls import runner as crawl_runner
from crawls import selectors as crawl_selectors
from crawls import services as crawl_services
from projects import selectors
from projects.schemas import project_json, task_json

from . import limits, progress, rooms
from .broadcasts import snapshot_frames
from .events import Ack, Dispatcher, Reject, on
from .payloads import ChatPost, ChatRef, Empty, ProgressRef, ProjectRef

GONE = "the connection is closed"  # the refusal (never seen by anyone) of work for a connection that went away


def _connected(ns: Dispatcher, sid: str) -> bool:
    """Whether the connection is still open. O(1) dict lookups: safe to call from a worker thread too."""
    return bool(ns.server.manager.is_connected(sid, ns.namespace))


def _still_connected(ns: Dispatcher, sid: str) -> None:
    """``Reject`` (one warning line, no traceback) when the connection has gone: nothing more is built for it."""
    if not _connected(ns, sid):
        raise Reject(GONE)


async def _fresh_user(ns: Dispatcher, sid: str) -> Any:
    """The connection's user read again now (``Reject`` if deactivated, deleted or disconnected).

    A join checks twice, before and after entering its room; the second check must not reuse the
    user read before the first, or a staff flag removed in between would still count.
    """
    try:
        return await ns.current_user(sid)
    except KeyError:  # the session is gone: the connection closed meanwhile
        raise Reject(GONE) from None


async def _enter_checked(ns: Dispatcher, sid: str, room: str, check: Callable[[Any], Awaitable[None]]) -> None:
    """Enter ``room``, then run ``check(user)`` again with the user read afresh; leave it if that refuses.

    Every join checks twice, before and after entering: a revocation committed in between
    (membership, staff, deactivation) is then either seen by this second check or finds the
    connection already in the room.
    """
    await ns.enter_room(sid, room)
    try:
        await check(await _fresh_user(ns, sid))
    except Reject:
        await ns.leave_room(sid, room)
        raise


# Snapshots are read, serialised and cut into frames in a worker thread: never on the event loop.
# Many may wait for that thread: each checks, when its turn comes, that someone still wants it.
def _tasks_snapshot(project_id: str, connected: Callable[[], bool]) -> list[dict[str, Any]] | None:
    if not connected():
        return None
    tasks = [task_json(t) for t in selectors.project_tasks(project_id=project_id)]
    if not connected():
        return None
    return snapshot_frames({"project_id": project_id}, "tasks", tasks)


def _projects_snapshot(user: Any) -> list[dict[str, Any]]:
    return snapshot_frames({}, "projects", [project_json(p) for p in selectors.visible_projects(user=user)])


SNAPSHOT_DRAIN_WAIT = 30.0  # seconds a snapshot waits, between two frames, for a slow reader to catch up


def _unsent(ns: Dispatcher, sid: str) -> int | None:
    """Bytes sent to this connection that it has not read yet (its queue and its transport); None once it is gone."""
    eio_sid = ns.server.manager.eio_sid_from_sid(sid, ns.namespace)
    socket = ns.server.eio.sockets.get(eio_sid) if eio_sid else None
    if socket is None or socket.closed:
        return None
    return limits.unsent(socket)


async def _send_frames(ns: Dispatcher, event: str, frames: list[dict[str, Any]], sid: str) -> None:
    """A snapshot's frames to one connection, in order; other work runs between them.

    Backpressure: a connection may hold at most REALTIME_MAX_BUFFERED_BYTES unsent, or it is
    dropped. A snapshot larger than that, to a slow reader (or a long-polling one between polls),
    would be dropped, reconnect and ask for it again, forever; so the next frame waits until the
    connection has read enough to take it (at most SNAPSHOT_DRAIN_WAIT, then it goes anyway).
    """
    room = max(settings.REALTIME_MAX_BUFFERED_BYTES - 2 * settings.REALTIME_SNAPSHOT_FRAME_BYTES, settings.REALTIME_MAX_BUFFERED_BYTES // 2)
    for index, frame in enumerate(frames):
        _still_connected(ns, sid)
        if index:
            await asyncio.sleep(0)
            deadline = time.monotonic() + SNAPSHOT_DRAIN_WAIT
            # Polled: neither engine.io's queue nor uvicorn's transport tells when it has drained.
            while (unsent := _unsent(ns, sid)) is not None and unsent > room and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            _still_connected(ns, sid)  # gone: the rest would go nowhere
        await ns.emit(event, frame, to=sid)


can_see_project = sync_to_async(selectors.can_see_project)


@on("join_project", ProjectRef)
async def join_project(ns: Dispatcher, sid: str, user: Any, payload: ProjectRef) -> Ack:
    project_id, room = str(payload.project_id), rooms.project(payload.project_id)
    _still_connected(ns, sid)
    if not await can_see_project(user=user, project_id=project_id):
        raise Reject("project not found")  # the same answer for unknown and invisible: no probing

    async def still_visible(fresh: Any) -> None:
        if not await can_see_project(user=fresh, project_id=project_id):
            raise Reject("project not found")
        _still_connected(ns, sid)

    await _enter_checked(ns, sid, room, still_visible)
    # Subscribed first, snapshot second: no update can fall in the gap.
    frames = await sync_to_async(_tasks_snapshot)(project_id, lambda: _connected(ns, sid))
    if frames is None:
        raise Reject(GONE)
    await _send_frames(ns, "initial_tasks", frames, sid)
    return {"project_id": project_id}


@on("leave_project", ProjectRef)
async def leave_project(ns: Dispatcher, sid: str, user: Any, payload: ProjectRef) -> Ack:
    await ns.leave_room(sid, rooms.project(payload.project_id))
    return {"project_id": str(payload.project_id)}


@on("subscribe_projects", Empty)
async def subscribe_projects(ns: Dispatcher, sid: str, user: Any, payload: Empty) -> Ack:
    await ns.enter_room(sid, rooms.PROJECT_LIST)
    await ns.enter_room(sid, rooms.project_list_of(user.pk))
    _still_connected(ns, sid)
    frames = await sync_to_async(_projects_snapshot)(user)
    await _send_frames(ns, "projects_update", frames, sid)
    return {}


@on("unsubscribe_projects", Empty)
async def unsubscribe_projects(ns: Dispatcher, sid: str, user: Any, payload: Empty) -> Ack:
    await ns.leave_room(sid, rooms.project_list_of(user.pk))
    await ns.leave_room(sid, rooms.PROJECT_LIST)
    return {}


async def _subscribe(ns: Dispatcher, sid: str, user: Any, payload: ProgressRef, *, kind: str, event: str) -> Ack:
    progress_id = str(payload.progress_id)
    operation = await sync_to_async(progress.find)(kind, progress_id)
    if operation is None or not operation.may_watch(user):
        raise Reject("unknown progress id")  # the same answer for unknown and someone else's

    async def still_allowed(fresh: Any) -> None:
        if not operation.may_watch(fresh):
            raise Reject("unknown progress id")

    await _enter_checked(ns, sid, rooms.progress(progress_id), still_allowed)
    # Read after entering: nothing missed. Running here? Its last sent state, with no
    # await before the emit; else the stored state (the operation runs elsewhere or ended).
    state = progress.live_state(kind, progress_id)
    if state is None:
        current = await sync_to_async(progress.find)(kind, progress_id)
        state = current.state if current is not None else None
    if state is not None:
        await ns.emit(event, state, to=sid)
    return {"progress_id": progress_id}


@on("subscribe_progress", ProgressRef)
async def subscribe_progress(ns: Dispatcher, sid: str, user: Any, payload: ProgressRef) -> Ack:
    return await _subscribe(ns, sid, user, payload, kind="project", event="project_progress")


@on("crawl_subscribe", ProgressRef)
async def crawl_subscribe(ns: Dispatcher, sid: str, user: Any, payload: ProgressRef) -> Ack:
    return await _subscribe(ns, sid, user, payload, kind="crawl", event="crawl_progress")


async def _unsubscribe(ns: Dispatcher, sid: str, user: Any, payload: ProgressRef) -> Ack:
    await ns.leave_room(sid, rooms.progress(payload.progress_id))
    return {"progress_id": str(payload.progress_id)}


on("unsubscribe_progress", ProgressRef)(_unsubscribe)
on("crawl_unsubscribe", ProgressRef)(_unsubscribe)


@on("crawl_stop", ProgressRef)
async def crawl_stop(ns: Dispatcher, sid: str, user: Any, payload: ProgressRef) -> Ack:
    progress_id = str(payload.progress_id)
    job = await sync_to_async(crawl_selectors.crawl_by_progress_id)(progress_id)
    if job is None or not progress.may_watch(job.started_by_id, user):
        raise Reject("unknown progress id")
    try:
        await sync_to_async(crawl_services.crawl_request_stop)(job=job)  # says crawl:stopping at once
    except crawl_services.CrawlError as error:
        raise Reject(str(error)) from None
    crawl_runner.stop_local(progress_id)  # runs here? cancel now; elsewhere its runner sees the flag
    return {"progress_id": progress_id, "status": "stopping"}


def _chat_history(session_id: str) -> list[dict[str, Any]]:
    return [chat_schemas.message_json(m) for m in chat_selectors.history(session_id=session_id)]


def _chat_session(user: Any, session_id: str) -> Any:
    try:
        return chat_selectors.session_for(user=user, session_id=session_id)
    except ChatSession.DoesNotExist:
        raise Reject("chat session not found") from None  # the same answer for unknown and not a participant


@on("join_chat", ChatRef)
async def join_chat(ns: Dispatcher, sid: str, user: Any, payload: ChatRef) -> Ack:
    session_id, room = str(payload.session_id), rooms.chat(payload.session_id)
    await sync_to_async(_chat_session)(user, session_id)

    async def still_participant(fresh: Any) -> None:
        await sync_to_async(_chat_session)(fresh, session_id)

    await _enter_checked(ns, sid, room, still_participant)
    messages = await sync_to_async(_chat_history)(session_id)  # subscribed first, history second
    await ns.emit("chat_history", {"session_id": session_id, "messages": messages}, to=sid)
    return {"session_id": session_id}


@on("leave_chat", ChatRef)
async def leave_chat(ns: Dispatcher, sid: str, user: Any, payload: ChatRef) -> Ack:
    await ns.leave_room(sid, rooms.chat(payload.session_id))
    return {"session_id": str(payload.session_id)}


@on("chat_message", ChatPost)
async def chat_message(ns: Dispatcher, sid: str, user: Any, payload: ChatPost) -> Ack:
    """Post into a session (participants only); everyone in its room, the sender included, gets ``chat_message``."""

    def post() -> Any:
        return chat_services.chat_message_post(session=_chat_session(user, str(payload.session_id)), author=user, body=payload.body)

    message = await sync_to_async(post)()
    return {"session_id": str(payload.session_id), "message_id": str(message.pk)}
