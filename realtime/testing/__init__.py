"""Testing helpers for projects that use realtime: see what your code broadcasts, and talk to a live server.

Capture broadcasts, no server needed::

    from realtime.testing import capture_broadcasts

    def test_a_new_note_is_announced(db):
        with capture_broadcasts() as sent:
            note = Note.objects.create(board=board, text="hi")
        assert sent == [("note_created", f"board_{board.pk}", note_json(note))]

or, with ``pytest_plugins = ["realtime.testing"]`` in your root ``conftest.py``, the ``broadcasts`` fixture
(the same capture, for the whole test)::

    def test_a_new_note_is_announced(db, broadcasts):
        Note.objects.create(board=board, text="hi")
        assert broadcasts.events() == ["note_created"]

Each entry is a ``Broadcast(event, room, data)``, a named tuple, so it compares equal to a plain tuple. Room
operations are recorded beside emits, ``room`` being the room whose members they address:
``("realtime:leave", members_of, {"room": room})``, ``("realtime:disconnect", members_of, {})`` and
``("realtime:recheck", members_of, {})``.

While a capture is open, every broadcast sent from its thread (``emit``, ``emit_on_commit``, live models, progress
runs, framed snapshots sent to a room, room operations) is recorded instead of delivered: no server, Redis or
remote door is needed, and nothing reaches a connected client. Replies to one connection (acks, a joiner's
snapshot) are not broadcasts and are not recorded. Sync code's emits are recorded by the time it returns (sync
code called on a running event loop schedules them as a task: let the loop run once before reading).

Transactions behave as in production: a rolled-back ``transaction.atomic()`` records nothing. Inside a test
transaction (pytest-django's ``db``, Django's ``TestCase``), which never commits, the on-commit callbacks
registered while capturing are run as ``TestCase.captureOnCommitCallbacks(execute=True)`` would: when the
captured list is read while no atomic block of your own is open (as if each statement had committed), and
when the ``with`` block ends. Under ``transactional_db`` the real commits run them, so there open the capture
outside your own ``transaction.atomic()``: a callback still pending when the capture closes runs at that
commit, after the capture, and is delivered rather than recorded.

Talk to a live server (a real uvicorn in a thread, and python-socketio's client)::

    server = LiveServer().start()          # serves settings.ASGI_APPLICATION on a free loopback port
    client = await connect(server.url, token=token)          # or cookies={"sessionid": ...}
    assert (await client.call("join_board", {"board_id": 1}))["ok"]
    note = await client.wait_for("note_created", lambda note: note["text"] == "hi")
    await client.close(); server.stop()

realtime delivers in-process to the one server its process runs, so start one ``LiveServer`` per test process
(a session-scoped fixture), and give tests that use it ``transactional_db``: the server's threads only see
committed rows.
"""

from .capture import Broadcast, Broadcasts, broadcasts, capture_broadcasts
from .client import ConnectionRefused, SocketClient, connect
from .server import LiveServer, free_port


def unstamped(data: object) -> object:
    """A broadcast's payload without its recovery stamp (``_live``, see ``realtime.history``): the object as sent."""
    return {k: v for k, v in data.items() if k != "_live"} if isinstance(data, dict) else data


__all__ = [
    "Broadcast",
    "Broadcasts",
    "ConnectionRefused",
    "LiveServer",
    "SocketClient",
    "broadcasts",
    "capture_broadcasts",
    "connect",
    "free_port",
    "unstamped",
]
