"""Bearer tokens: who is behind one, and when it was last used (stamped at most once a minute)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime.models import ApiToken
from realtime.tokens import LAST_USED_PRECISION, token_owner
from tests.support import factories as f

pytestmark = pytest.mark.django_db


def test_a_token_resolves_to_its_active_user_and_is_stamped_on_first_use() -> None:
    user = f.make_user("tok")
    raw = f.token_for(user)
    owner, token_id = token_owner(raw)
    assert owner.pk == user.pk
    assert ApiToken.objects.get(pk=token_id).last_used_at is not None


@pytest.mark.parametrize("raw", ["", "nope", "x" * 201, None, 42])
def test_unknown_or_malformed_tokens_resolve_to_nobody(raw) -> None:
    f.token_for(f.make_user("tok"))
    assert token_owner(raw) is None


def test_inactive_users_tokens_resolve_to_nobody() -> None:
    user = f.make_user("tok")
    raw = f.token_for(user)
    user.is_active = False
    user.save()
    assert token_owner(raw) is None


def test_use_within_the_precision_reads_only() -> None:
    raw = f.token_for(f.make_user("tok"))
    token_owner(raw)
    with CaptureQueriesContext(connection) as queries:
        token_owner(raw)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]


def test_use_after_the_precision_stamps_again() -> None:
    raw = f.token_for(f.make_user("tok"))
    _, token_id = token_owner(raw)
    old = timezone.now() - LAST_USED_PRECISION - timedelta(seconds=1)
    ApiToken.objects.filter(pk=token_id).update(last_used_at=old)
    token_owner(raw)
    assert ApiToken.objects.get(pk=token_id).last_used_at > old
