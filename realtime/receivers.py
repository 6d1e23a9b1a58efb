"""Signal receivers: one line each, handing the change to ``changes`` (which broadcasts on commit).

``QuerySet.update()`` and ``bulk_create`` send no signals and so broadcast nothing;
use the services in ``projects.services`` for bulk moves.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from chat.models import ChatMessage, ChatSession
from projects.models import Project, Task

from . import changes
from .models import ApiToken


@receiver(post_save, sender=Task, dispatch_uid="realtime.task_saved")
def task_saved(sender: type, instance: Task, created: bool, **kwargs: Any) -> None:
    changes.task_saved(instance, created=created)


@receiver(post_delete, sender=Task, dispatch_uid="realtime.task_deleted")
def task_deleted(sender: type, instance: Task, **kwargs: Any) -> None:
    changes.task_deleted(instance)


@receiver(post_save, sender=Project, dispatch_uid="realtime.project_saved")
def project_saved(sender: type, instance: Project, **kwargs: Any) -> None:
    changes.project_saved(instance)


@receiver(pre_delete, sender=Project, dispatch_uid="realtime.project_deleting")
def project_deleting(sender: type, instance: Project, **kwargs: Any) -> None:
    changes.project_deleting(instance)


@receiver(post_delete, sender=Project, dispatch_uid="realtime.project_deleted")
def project_deleted(sender: type, instance: Project, **kwargs: Any) -> None:
    changes.project_deleted(instance)


@receiver(m2m_changed, sender=Project.members.through, dispatch_uid="realtime.members_changed")
def members_changed(sender: type, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any) -> None:
    changes.members_changed(instance, action=action, reverse=reverse, pk_set=pk_set)


@receiver(post_delete, sender=ApiToken, dispatch_uid="realtime.token_revoked")
def token_revoked(sender: type, instance: ApiToken, **kwargs: Any) -> None:
    changes.token_revoked(instance.pk)


@receiver(pre_save, sender=get_user_model(), dispatch_uid="realtime.user_saving")
def user_saving(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    changes.user_saving(instance, update_fields=update_fields)


@receiver(post_save, sender=get_user_model(), dispatch_uid="realtime.user_saved")
def user_saved(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    changes.user_saved(instance, update_fields=update_fields)


@receiver(post_delete, sender=get_user_model(), dispatch_uid="realtime.user_deleted")
def user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    changes.user_deleted(instance.pk)


@receiver(user_logged_out, dispatch_uid="realtime.logged_out")
def logged_out(sender: type, request: Any, **kwargs: Any) -> None:
    changes.logged_out(getattr(getattr(request, "session", None), "session_key", None))  # before logout flushes it


@receiver(post_save, sender=ChatMessage, dispatch_uid="realtime.chat_message_saved")
def chat_message_saved(sender: type, instance: ChatMessage, created: bool, **kwargs: Any) -> None:
    changes.chat_message_saved(instance, created=created)


@receiver(m2m_changed, sender=ChatSession.participants.through, dispatch_uid="realtime.chat_participants_changed")
def chat_participants_changed(sender: type, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any) -> None:
    changes.chat_participants_changed(instance, action=action, reverse=reverse, pk_set=pk_set)
