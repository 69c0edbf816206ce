"""Provisioned throughput: what we bought, when we want it, and everything anyone did about it.

Times are set by the services from the `now` they are given (never `auto_now`), so a test
can move the clock through a day without sleeping.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q


class Purpose(models.TextChoices):
    """What a provisioned model serves; at most one is active per purpose."""

    CHAT = "chat", "Chat answers"


class ThroughputStatus(models.TextChoices):
    # Row claimed; the create call has not answered yet (or its answer was lost).
    REQUESTED = "requested", "Requested"
    CREATING = "creating", "Creating"
    IN_SERVICE = "in_service", "In service"
    # Routing has stopped; the delete follows once in-flight answers are done.
    DRAINING = "draining", "Draining"
    DELETED = "deleted", "Deleted"
    FAILED = "failed", "Failed"


# Statuses in which a provisioned model may exist (and cost money) for the row's purpose.
ACTIVE_STATUSES = (
    ThroughputStatus.REQUESTED,
    ThroughputStatus.CREATING,
    ThroughputStatus.IN_SERVICE,
    ThroughputStatus.DRAINING,
)


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    ALARM = "alarm", "Latency alarm"
    MANUAL = "manual", "By hand"
    RECONCILE = "reconcile", "Reconciliation"


class ProvisionedThroughput(models.Model):
    """One provisioned model's life, from the claim before the create call to its deletion."""

    purpose = models.CharField(max_length=32, choices=Purpose.choices, default=Purpose.CHAT)
    name = models.CharField(max_length=63, unique=True, help_text="provisionedModelName (carries the name prefix).")
    client_request_token = models.CharField(
        max_length=64, unique=True, help_text="Sent with the create call: a retried call cannot buy twice."
    )
    arn = models.CharField(max_length=255, blank=True, db_index=True)
    model_id = models.CharField(max_length=2048)
    model_units = models.PositiveIntegerField()
    commitment = models.CharField(max_length=16, blank=True, help_text="Empty: no commitment, billed hourly.")
    commitment_expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ThroughputStatus.choices, default=ThroughputStatus.REQUESTED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(db_index=True)
    in_service_at = models.DateTimeField(null=True, blank=True)
    draining_since = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Deleted, or given up.")
    failure_message = models.TextField(blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # Two beats, two workers or a beat and an operator can never buy two at once.
            models.UniqueConstraint(
                fields=["purpose"], condition=Q(status__in=ACTIVE_STATUSES), name="throughput_one_active_per_purpose"
            ),
        ]
        permissions = [("operate_provisionedthroughput", "Can scale provisioned throughput up or down by hand")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_status_display()})"

    def committed_at(self, now: datetime) -> bool:
        """True while a committed term forbids deleting it."""
        if not self.commitment:
            return False
        return self.commitment_expires_at is None or self.commitment_expires_at > now


class WindowKind(models.TextChoices):
    ALARM = "alarm", "Kept up by the latency alarm"
    MANUAL_ON = "manual_on", "Kept up by hand"
    MANUAL_OFF = "manual_off", "Kept down by hand"


class CapacityWindow(models.Model):
    """A time span in which capacity is wanted (alarm, by hand) or refused (by hand), whatever the hour."""

    kind = models.CharField(max_length=16, choices=WindowKind.choices)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_by = models.CharField(max_length=150)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["kind", "ends_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.starts_at:%Y-%m-%d %H:%M}-{self.ends_at:%H:%M}"


class Action(models.TextChoices):
    SCALE_UP = "scale_up", "Scale up"
    SCALE_DOWN = "scale_down", "Scale down"
    CREATE = "create", "Create"
    STATUS = "status", "Status change"
    DELETE = "delete", "Delete"
    LEAK = "leak", "Leak found"
    COMMITTED = "committed", "Committed term kept"
    ALARM = "alarm", "Latency alarm"
    ALARM_CAPPED = "alarm_capped", "Latency alarm over the daily cap"
    HOLD = "hold", "Held by hand"


class Result(models.TextChoices):
    OK = "ok", "Done"
    SKIPPED = "skipped", "Nothing to do"
    FAILED = "failed", "Failed"
    REPORTED = "reported", "Reported"


class ThroughputAction(models.Model):
    """The history: who or what did what, when, and how it went (shown in the admin)."""

    created_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, help_text="beat:<entry>, alarm, reconcile, admin:<user>, ...")
    action = models.CharField(max_length=16, choices=Action.choices)
    result = models.CharField(max_length=16, choices=Result.choices)
    detail = models.TextField(blank=True)
    arn = models.CharField(max_length=255, blank=True)
    throughput = models.ForeignKey(
        ProvisionedThroughput, on_delete=models.SET_NULL, null=True, blank=True, related_name="actions"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["action", "created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.result}"
