"""The process's one Socket.IO server (default namespace) and its connection lifecycle."""

import logging
from typing import Any

import socketio
from asgiref.sync import sync_to_async
from django.conf import settings

from . import bus, direct_write, handlers, lifecycle, rooms  # noqa: F401  (handlers registers the client events)
from .auth import Refused, authenticate
from .channels_bridge import build_bridge
from .events import Dispatcher
from .manager import build_manager

log = logging.getLogger(__name__)


class Realtime(Dispatcher):
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse anonymous or bad credentials with a reason; remember who this is."""
        try:
            identity = await sync_to_async(authenticate)(environ, auth)
        except Refused as refusal:
            log.warning("refused connection %s: %s", sid, refusal)
            raise socketio.exceptions.ConnectionRefusedError(str(refusal)) from None
        except Exception:
            log.exception("authentication failed")
            raise socketio.exceptions.ConnectionRefusedError("server error during authentication") from None
        await self.save_session(sid, {"user_id": identity.user_id, "username": identity.username})
        await self.enter_room(sid, rooms.user(identity.user_id))
        if identity.token_id is not None:
            await self.enter_room(sid, rooms.token(identity.token_id))

    async def on_disconnect(self, sid: str, reason: str) -> None:
        pass  # Socket.IO removes the connection from its rooms

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await super().enter_room(sid, room, namespace=namespace)
        if bridge is not None and not rooms.is_internal(room):
            await bridge.room_entered(room)


def build_server() -> socketio.AsyncServer:
    direct_write.install()
    server = socketio.AsyncServer(
        async_mode="asgi",
        # None = same origin only (engine.io compares Origin with Host); never "*" by default.
        cors_allowed_origins=settings.REALTIME_CORS_ORIGINS or None,
        ping_interval=settings.REALTIME_PING_INTERVAL,
        ping_timeout=settings.REALTIME_PING_TIMEOUT,
        max_http_buffer_size=settings.REALTIME_MAX_MESSAGE_BYTES,
        logger=False,
        engineio_logger=False,
        client_manager=build_manager(),
    )
    server.register_namespace(Realtime("/"))
    return server


sio = build_server()
bridge = build_bridge(sio)


async def on_startup() -> None:
    """ASGI lifespan startup: this process now delivers events itself."""
    bus.attach(sio)
    for hook in lifecycle.startup_hooks:
        await hook()
    if settings.REALTIME_GC_TUNING:
        lifecycle.tune_gc()


async def on_shutdown() -> None:
    bus.detach()
    if bridge is not None:
        await bridge.close()
    await sio.shutdown()
