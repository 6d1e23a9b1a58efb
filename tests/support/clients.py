"""Shared definitions for the test-side Socket.IO clients (NodeClient, PyClient)."""

from realtime.testing import ConnectionRefused

__all__ = ["ConnectionRefused"]
