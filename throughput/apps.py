from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db import connections
from django.db.models.signals import post_migrate

logger = logging.getLogger(__name__)

# Longest name part after the prefix: "chat-YYYYMMDD-HHMM-xxxxxxxx" (throughput.services.throughput_name).
_NAME_SUFFIX_LENGTH = 27
_NAME_MAX_LENGTH = 63  # Bedrock's ProvisionedModelName


def _schedule_install(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """`migrate` installs the beat schedule (missing entries only; the admin's edits stay)."""
    from django_celery_beat.models import PeriodicTask

    from .schedule import schedule_install

    if PeriodicTask._meta.db_table not in connections[using].introspection.table_names():
        return  # django_celery_beat is not migrated (yet) on this database
    schedule_install(using=using)


def _check_name_prefix(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    longest = len(settings.PROVISIONED_NAME_PREFIX) + _NAME_SUFFIX_LENGTH
    if longest > _NAME_MAX_LENGTH:
        return [checks.Error(
            f"PROVISIONED_NAME_PREFIX is too long: names would have {longest} characters, Bedrock allows "
            f"{_NAME_MAX_LENGTH}", hint=f"Use at most {_NAME_MAX_LENGTH - _NAME_SUFFIX_LENGTH} characters.",
            id="throughput.E001")]
    return []


class ThroughputConfig(AppConfig):
    name = "throughput"
    verbose_name = "Provisioned throughput"

    def ready(self) -> None:
        post_migrate.connect(_schedule_install, sender=self, dispatch_uid="throughput.schedule_install")
        checks.register(_check_name_prefix, checks.Tags.compatibility)
