from django.core.management.base import BaseCommand, CommandError, CommandParser

from notes import services
from notes.models import Board
from realtime import flush


class Command(BaseCommand):
    help = "Add a note to board BOARD_ID and print its id; the board's watchers see it at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("board_id", type=int)
        parser.add_argument("text")

    def handle(self, *args: object, board_id: int, text: str, **options: object) -> None:
        try:
            note = services.note_create(board_id=board_id, text=text)
        except Board.DoesNotExist:
            raise CommandError(f"no such board: {board_id}") from None
        # This process serves no Socket.IO: its events go to the running server; wait until they have left.
        flush(5.0)
        self.stdout.write(str(note.pk))
