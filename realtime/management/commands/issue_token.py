from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.models import ApiToken


class Command(BaseCommand):
    help = "Issue a new API token for USERNAME and print it (and nothing else)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label shown in the admin.")

    def handle(self, *args: object, username: str, name: str, **options: object) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no such user: {username}") from None
        _, raw = ApiToken.issue(user=user, name=name or "issue_token")
        self.stdout.write(raw)
