"""realtime's own signal receivers, one line each: revocations of credentials (``revocation``).

Applications connect their own receivers in their ``live.py``.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from . import revocation
from .models import ApiToken


@receiver(post_delete, sender=ApiToken, dispatch_uid="realtime.token_revoked")
def token_revoked(sender: type, instance: ApiToken, **kwargs: Any) -> None:
    revocation.token_revoked(instance.pk)


@receiver(pre_save, sender=get_user_model(), dispatch_uid="realtime.user_saving")
def user_saving(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    revocation.user_saving(instance, update_fields=update_fields)


@receiver(post_save, sender=get_user_model(), dispatch_uid="realtime.user_saved")
def user_saved(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    revocation.user_saved(instance, update_fields=update_fields)


@receiver(post_delete, sender=get_user_model(), dispatch_uid="realtime.user_deleted")
def user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    revocation.user_deleted(instance.pk)


@receiver(user_logged_out, dispatch_uid="realtime.logged_out")
def logged_out(sender: type, request: Any, **kwargs: Any) -> None:
    revocation.logged_out(getattr(getattr(request, "session", None), "session_key", None))  # before logout flushes it
