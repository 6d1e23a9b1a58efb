"""Shared definitions for the test-side Socket.IO clients (NodeClient, PyClient)."""


class ConnectionRefused(Exception):
    """The server refused the Socket.IO connection (a ``connect_error``)."""

    def __init__(self, message: str, data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
