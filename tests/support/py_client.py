"""``PyClient``: ``realtime.testing.SocketClient`` (python-socketio) behind the same small interface as ``NodeClient``."""

from realtime.testing import SocketClient


class PyClient(SocketClient):
    kind = "python"
