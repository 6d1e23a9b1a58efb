from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from notes import services


class Command(BaseCommand):
    help = "Create a board with these members (usernames) and print its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("members", nargs="*")

    def handle(self, *args: object, name: str, members: list[str], **options: object) -> None:
        try:
            board = services.board_create(name=name, usernames=members)
        except get_user_model().DoesNotExist:
            raise CommandError(f"unknown user among {members}") from None
        self.stdout.write(str(board.pk))
