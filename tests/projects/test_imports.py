"""Parsing imports: the checklist grammar kept, linear time on hostile input, CSV limits."""

import csv
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projects.imports import MAX_TASKS, ImportFailure, TaskSpec, checklist_item, from_csv, from_markdown
from projects.models import MAX_DESCRIPTION_CHARS, MAX_REORDER_IDS

# The pattern the parser replaced (quadratic on long lines): the reference for the grammar it keeps.
OLD_CHECKBOX = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[( |x|X)\]\s+(.+?)\s*$")


def old_item(line: str) -> tuple[bool, str] | None:
    match = OLD_CHECKBOX.match(line)
    if match is None or not match.group(2).strip():
        return None  # a whitespace-only title is no task (the old pattern took " " as one)
    return match.group(1) in "xX", match.group(2)


def test_every_list_style_is_read():
    text = "\n".join(
        [
            "# Plan",
            "- [ ] dash",
            "* [x] star done",
            "+ [X] plus done",
            "1. [ ] numbered",
            "12) [ ] paren",
            "   - [ ]   indented, padded   ",
            "- [] not a box",
            "-[ ] no space",
            "- [ ]",
            "prose",
        ]
    )
    assert from_markdown(text) == [
        TaskSpec("dash"),
        TaskSpec("star done", "done"),
        TaskSpec("plus done", "done"),
        TaskSpec("numbered"),
        TaskSpec("paren"),
        TaskSpec("indented, padded"),
    ]


PIECES = ["-", "*", "+", "1", "٣", ".", ")", " ", "\t", "\u3000", "[", "]", "x", "X", "a", "[ ]", "- [x] "]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES)).map("".join))
def test_the_grammar_is_the_old_patterns(line):
    assert checklist_item(line) == old_item(line)


@pytest.mark.parametrize(
    "line",
    [
        "- [ ] a" + " " * 1_900_000 + "a",  # quadratic for (.+?)\s*$
        "- [ ] " + " \t" * 950_000 + "x",
        "1" * 1_900_000 + ". [ ] a",
        "-" + " " * 1_900_000,
    ],
    ids=["spaces-in-title", "tabs", "digits", "blank-bullet"],
)
def test_two_megabyte_lines_parse_in_linear_time(line):
    began = time.perf_counter()
    try:
        from_markdown(line)
    except ImportFailure:
        pass
    print(f"\n{len(line):,} characters: {1000 * (time.perf_counter() - began):.1f} ms")


def test_too_many_items_stop_early():
    with pytest.raises(ImportFailure, match=f"too many tasks: {MAX_TASKS + 1}"):
        from_markdown("- [ ] t\n" * 400_000)


def test_csv_rows_columns_and_line_numbers():
    assert from_csv("Title , STATUS,extra\nA,doing,z\n\nB,,\n") == [TaskSpec("A", "doing"), TaskSpec("B")]
    with pytest.raises(ImportFailure, match="line 4: unknown status 'later'"):
        from_csv("title,status\nA,todo\n\nB,later\n")
    with pytest.raises(ImportFailure, match="line 2: empty title"):
        from_csv("title,description\n,nothing\n")


def test_a_csv_field_over_the_limit_is_refused_with_its_line():
    limit = csv.field_size_limit()
    with pytest.raises(ImportFailure, match=f"line 3: field larger than field limit \\({limit}\\)"):
        from_csv("title,description\nok,fine\nbig," + "x" * (limit + 1) + "\n")


def test_a_huge_header_costs_one_pass_not_one_per_row():
    text = "title" + ",c" * 600_000 + "\n" + "x\n" * 4_000
    began = time.perf_counter()
    assert len(from_csv(text)) == 4_000
    print(f"\n600,000 columns × 4,000 rows: {1000 * (time.perf_counter() - began):.1f} ms")


def test_csv_fields_over_what_a_task_holds_are_refused_with_their_line():
    at_limit = "d" * MAX_DESCRIPTION_CHARS
    tasks = from_csv(f"title,description,assignee,feature\nA,{at_limit},{'a' * 255},{'f' * 255}\n")
    assert len(tasks[0].description) == MAX_DESCRIPTION_CHARS and tasks[0].line == 2
    for column, value, limit in [
        ("description", "d" * (MAX_DESCRIPTION_CHARS + 1), MAX_DESCRIPTION_CHARS),
        ("assignee", "a" * 256, 255),
        ("feature", "f" * 256, 255),
    ]:
        with pytest.raises(ImportFailure, match=f"^line 3: {column} too long \\({len(value)} characters, at most {limit}\\)$"):
            from_csv(f"title,{column}\nok,fine\nbig,{value}\n")


def test_a_multi_line_field_names_the_line_its_row_ends_on():
    text = 'title,description\nok,\n"big","' + "x\n" * 3 + "y" * MAX_DESCRIPTION_CHARS + '"\n'
    with pytest.raises(ImportFailure, match="^line 6: description too long"):
        from_csv(text)


def test_an_import_is_bounded_like_a_reorder():
    # Every task of an imported project can be moved in one reorder.
    assert MAX_TASKS == MAX_REORDER_IDS
    with pytest.raises(ImportFailure, match=f"too many tasks: {MAX_TASKS + 1}"):
        from_csv("title\n" + "t\n" * (MAX_TASKS + 1))
