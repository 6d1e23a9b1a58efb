"""Task lists to import: project templates, Markdown checklists and CSV files."""

import csv
import io
import re
from dataclasses import dataclass

STATUSES = {"todo", "doing", "review", "done"}
MAX_TASKS = 5_000

TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "kanban": [("Collect ideas", "todo"), ("Prioritise the backlog", "todo"), ("Plan the first iteration", "todo")],
    "software": [
        ("Write the specification", "todo"),
        ("Set up CI", "todo"),
        ("Build the first feature", "todo"),
        ("Test it end to end", "todo"),
        ("Release", "todo"),
    ],
    "research": [("Formulate the question", "todo"), ("Survey prior work", "todo"), ("Run experiments", "todo"), ("Write up", "todo")],
}

CHECKBOX = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[( |x|X)\]\s+(.+?)\s*$")


class ImportFailure(Exception):
    """The input cannot be imported; the message says where and why."""


@dataclass(frozen=True)
class TaskSpec:
    title: str
    status: str = "todo"
    description: str = ""
    assignee: str = "User"
    feature: str = ""


def from_template(name: str) -> list[TaskSpec]:
    if name not in TEMPLATES:
        raise ImportFailure(f"unknown template {name!r} (choose from {', '.join(sorted(TEMPLATES))})")
    return [TaskSpec(title, status) for title, status in TEMPLATES[name]]


def from_markdown(text: str) -> list[TaskSpec]:
    """``- [ ] title`` (to do) and ``- [x] title`` (done) lines; other lines are ignored."""
    tasks = []
    for match in filter(None, map(CHECKBOX.match, text.splitlines())):
        tasks.append(TaskSpec(match.group(2)[:255], "done" if match.group(1).lower() == "x" else "todo"))
    if not tasks:
        raise ImportFailure("no checklist items found (expected lines like '- [ ] a task')")
    return _bounded(tasks)


def from_csv(text: str) -> list[TaskSpec]:
    """A header row with ``title`` (required) and optionally status, description, assignee, feature."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "title" not in [f.strip().lower() for f in reader.fieldnames]:
        raise ImportFailure("the CSV needs a header row with a 'title' column")
    tasks = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get("title"):
            raise ImportFailure(f"line {line}: empty title")
        status = row.get("status") or "todo"
        if status not in STATUSES:
            raise ImportFailure(f"line {line}: unknown status {status!r} (use {', '.join(sorted(STATUSES))})")
        tasks.append(
            TaskSpec(row["title"][:255], status, row.get("description", ""), row.get("assignee") or "User", row.get("feature", "")[:255])
        )
    if not tasks:
        raise ImportFailure("the CSV has no rows")
    return _bounded(tasks)


def _bounded(tasks: list[TaskSpec]) -> list[TaskSpec]:
    if len(tasks) > MAX_TASKS:
        raise ImportFailure(f"too many tasks: {len(tasks)} (at most {MAX_TASKS})")
    return tasks


def parse(*, template: str | None, fmt: str | None, content: str | None) -> list[TaskSpec]:
    if template:
        return from_template(template)
    return from_markdown(content or "") if fmt == "markdown" else from_csv(content or "")
