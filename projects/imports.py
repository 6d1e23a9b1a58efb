"""Task lists to import: project templates, Markdown checklists and CSV files.

Everything here is linear in the input (no backtracking regular expressions, no per-row work
that grows with the header) and stops as soon as the input is known to be too large.
CPU-bound: callers run ``parse`` in a worker thread, never on the event loop.
"""

import csv
import dataclasses
import io
import re
from dataclasses import dataclass

from .models import MAX_DESCRIPTION_CHARS, MAX_REORDER_IDS, Task

STATUSES = {"todo", "doing", "review", "done"}
# An imported project's tasks can all be moved in one reorder: the two bounds are one.
MAX_TASKS = MAX_REORDER_IDS
TITLE_CHARS = Task._meta.get_field("title").max_length  # longer titles are cut (a title is a line of text)
# Longer values are refused with their line: cutting them would lose data silently.
FIELD_LIMITS = {
    "description": MAX_DESCRIPTION_CHARS,
    "assignee": Task._meta.get_field("assignee").max_length,
    "feature": Task._meta.get_field("feature").max_length,
}

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

COLUMNS = ("title", "status", "description", "assignee", "feature")
_DIGITS = re.compile(r"\d*")  # a single greedy run, nothing after it: linear, no backtracking


class ImportFailure(Exception):
    """The input cannot be imported; the message says where and why."""


@dataclass(frozen=True)
class TaskSpec:
    title: str
    status: str = "todo"
    description: str = ""
    assignee: str = "User"
    feature: str = ""
    line: int = dataclasses.field(default=0, compare=False)  # where it was read (1-based), 0 for a template


def from_template(name: str) -> list[TaskSpec]:
    if name not in TEMPLATES:
        raise ImportFailure(f"unknown template {name!r} (choose from {', '.join(sorted(TEMPLATES))})")
    return [TaskSpec(title, status) for title, status in TEMPLATES[name]]


def checklist_item(line: str) -> tuple[bool, str] | None:
    """``(done, title)`` for ``- [ ] title``, ``* [x] title``, ``+ [X] title``, ``1. [ ] title`` or ``1) [ ] title``; else None.

    String operations only, each a single pass: a regular expression like ``(.+?)\\s*$`` backtracks
    quadratically on a long line of spaces.
    """
    rest = line.lstrip()
    if rest[:1] in ("-", "*", "+"):
        rest = rest[1:]
    else:
        number = _DIGITS.match(rest).end()  # type: ignore[union-attr]  # \d* always matches
        if number == 0 or rest[number : number + 1] not in (".", ")"):
            return None
        rest = rest[number + 1 :]
    if not rest[:1].isspace():
        return None
    rest = rest.lstrip()
    if len(rest) < 4 or rest[0] != "[" or rest[2] != "]" or rest[1] not in " xX" or not rest[3].isspace():
        return None
    title = rest[3:].strip()
    return (rest[1] in "xX", title) if title else None


def from_markdown(text: str) -> list[TaskSpec]:
    """``- [ ] title`` (to do) and ``- [x] title`` (done) lines; other lines are ignored."""
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = checklist_item(line)
        if item is not None:
            tasks.append(TaskSpec(item[1][:TITLE_CHARS], "done" if item[0] else "todo", line=number))
            _bounded(tasks)  # stop at once, not after the whole input
    if not tasks:
        raise ImportFailure("no checklist items found (expected lines like '- [ ] a task')")
    return tasks


def from_csv(text: str) -> list[TaskSpec]:
    """A header row with ``title`` (required) and optionally status, description, assignee, feature.

    Fields are limited to ``csv.field_size_limit()`` characters (131,072 by default), and description,
    assignee and feature to what a task holds (``FIELD_LIMITS``); a larger one is refused with its line
    number. Titles are cut to ``TITLE_CHARS``. Unknown columns are ignored.
    """
    reader = csv.reader(io.StringIO(text))
    tasks = []
    try:
        header = next(reader, None)
        names = [name.strip().lower() for name in header or []]
        if "title" not in names:
            raise ImportFailure("the CSV needs a header row with a 'title' column")
        # Only the known columns are read: a header of a million columns costs one pass, not one per row.
        where = {name: index for index, name in enumerate(names) if name in COLUMNS}
        for row in reader:
            if not row:
                continue  # a blank line
            line = reader.line_num
            field = {name: row[index].strip() for name, index in where.items() if index < len(row)}
            if not field.get("title"):
                raise ImportFailure(f"line {line}: empty title")
            status = field.get("status") or "todo"
            if status not in STATUSES:
                raise ImportFailure(f"line {line}: unknown status {status!r} (use {', '.join(sorted(STATUSES))})")
            values = {
                "description": field.get("description", ""),
                "assignee": field.get("assignee") or "User",
                "feature": field.get("feature", ""),
            }
            for name, limit in FIELD_LIMITS.items():
                if len(values[name]) > limit:
                    raise ImportFailure(f"line {line}: {name} too long ({len(values[name])} characters, at most {limit})")
            tasks.append(TaskSpec(field["title"][:TITLE_CHARS], status, **values, line=line))
            _bounded(tasks)
    except csv.Error as error:  # e.g. "field larger than field limit (131072)", a NUL byte
        raise ImportFailure(f"line {reader.line_num}: {error}") from None
    if not tasks:
        raise ImportFailure("the CSV has no rows")
    return tasks


def _bounded(tasks: list[TaskSpec]) -> list[TaskSpec]:
    if len(tasks) > MAX_TASKS:
        raise ImportFailure(f"too many tasks: {len(tasks)} (at most {MAX_TASKS})")
    return tasks


def parse(*, template: str | None, fmt: str | None, content: str | None) -> list[TaskSpec]:
    if template:
        return from_template(template)
    return from_markdown(content or "") if fmt == "markdown" else from_csv(content or "")
