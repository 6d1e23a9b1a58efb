from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from projects import services
from projects.models import Project

DEMO_TASKS = [
    ("Sketch the board", "done"),
    ("Wire the REST API", "review"),
    ("Push task changes live", "doing"),
    ("Crawl the docs site", "todo"),
    ("Invite the team", "todo"),
]


class Command(BaseCommand):
    help = "Create the demo users and a demo project with a few tasks (idempotent; development only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default="demo", help="Password for the demo users (default: demo).")

    @transaction.atomic
    def handle(self, *args: object, password: str, **options: object) -> None:
        User = get_user_model()
        demo, created = User.objects.get_or_create(username="demo", defaults={"is_staff": True, "is_superuser": True})
        if created:
            demo.set_password(password)
            demo.save()
        teammate, created = User.objects.get_or_create(username="teammate")
        if created:
            teammate.set_password(password)
            teammate.save()
        if not Project.objects.filter(title="Demo project", owner=demo).exists():
            project = services.project_create(
                owner=demo, title="Demo project", description="Live tasks over Socket.IO.", member_usernames=["teammate"]
            )
            for order, (title, status) in enumerate(DEMO_TASKS):
                services.task_create(project=project, title=title, status=status, task_order=order)
        self.stdout.write(
            "Demo data ready.\n"
            f"  Log in at /admin/ (or /accounts/login/) as demo / {password} (superuser) or teammate / {password}.\n"
            "  A token for scripts and API clients: .venv/bin/python manage.py issue_token demo\n"
            "  then: curl -H 'Authorization: Bearer <token>' http://127.0.0.1:8000/api/projects/"
        )
