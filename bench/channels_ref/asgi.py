"""Plain websocket at /ws/<room>/ joins group <room>; POST /emit?room=R&n=K does K group_send calls."""

import os
import time
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.channels_ref.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns: list = []


class RoomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def room_message(self, message: dict) -> None:
        await self.send_json(message["data"])


async def emit(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    layer, t0 = get_channel_layer(), time.time() * 1000
    for seq in range(int(query.get("n", 1))):
        await layer.group_send(query["room"], {"type": "room.message", "data": {"seq": seq, "t": t0}})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


application = ProtocolTypeRouter({"http": emit, "websocket": URLRouter([path("ws/<str:room>/", RoomConsumer.as_asgi())])})
