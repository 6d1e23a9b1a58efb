"""live_model: what a save or delete announces, and to which room — moves above all (no server: captured)."""

from __future__ import annotations

import contextlib

import pytest
from django.db import transaction

from projects.models import Task
from realtime.testing import capture_broadcasts
from tests.support import factories as f

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


@pytest.fixture
def rooms() -> tuple[Task, str, str, str]:
    """A task in project A, and the rooms of projects A, B and C (the owner sees all three)."""
    owner = f.make_user("owner")
    a, b, c = (f.make_project(owner, title=t) for t in "ABC")
    return f.make_task(a, title="moving"), str(a.pk), str(b.pk), str(c.pk)


def sent(captured) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(event, room) for event, room, _ in captured if event.startswith("task_")]


def test_a_move_tells_the_old_room_deleted_and_the_new_one_updated(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, _ = rooms
    with capture_broadcasts() as captured:
        task.project_id = b
        task.save()
    assert sent(captured) == [("task_updated", b), ("task_deleted", a)]
    assert captured.data("task_deleted") == [{"task_id": str(task.pk), "project_id": a}]


def test_a_save_that_leaves_the_project_out_announces_the_project_it_is_still_in(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, _ = rooms
    with capture_broadcasts() as captured:
        task.project_id = b  # in memory only: update_fields does not write it
        task.title = "renamed"
        task.save(update_fields=["title"])
    assert sent(captured) == [("task_updated", a)]
    assert captured.data("task_updated")[0]["project_id"] == a


def test_a_delete_after_an_unsaved_move_goes_to_the_room_it_was_in(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, _ = rooms
    with capture_broadcasts() as captured:
        task.project_id = b
        task.delete()
    assert sent(captured) == [("task_deleted", a)]


def test_a_move_after_refresh_from_db_tells_the_room_the_database_had(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, c = rooms
    Task.objects.filter(pk=task.pk).update(project_id=b)  # moved behind this instance's back (no signal)
    task.refresh_from_db()
    with capture_broadcasts() as captured:
        task.project_id = c
        task.save()
    assert sent(captured) == [("task_updated", c), ("task_deleted", b)]


def test_a_move_of_an_instance_loaded_without_its_project_is_announced(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, _ = rooms
    deferred = Task.objects.only("id", "title").get(pk=task.pk)
    with capture_broadcasts() as captured:
        deferred.project_id = b
        deferred.save()
    assert ("task_deleted", a) in sent(captured)
    assert ("task_updated", b) in sent(captured)


def test_a_rolled_back_move_is_forgotten(rooms) -> None:  # type: ignore[no-untyped-def]
    task, a, b, _ = rooms
    with capture_broadcasts() as captured:
        with contextlib.suppress(Boom), transaction.atomic():
            task.project_id = b
            task.save()
            raise Boom
        assert sent(captured) == []  # nothing of the rolled-back move
        task.project_id = b  # the same move again, for real: the database still says A
        task.save()
    assert sent(captured) == [("task_updated", b), ("task_deleted", a)]


def test_loading_many_rows_costs_no_query_per_row(rooms, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    task, a, _, _ = rooms
    for n in range(20):
        f.make_task(task.project, title=f"t{n}")
    with django_assert_num_queries(1):
        assert len(list(Task.objects.only("id", "title").filter(project_id=a))) == 21
