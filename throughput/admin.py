"""Admin: the current state, the schedule, the history, today's cost, and scaling by hand.

The provisioned-throughput list page carries a state panel (none / creating / in service,
why, until when), the beat entries (edited in django-celery-beat's own admin), the recent
history and today's cost estimate. "Scale up now" / "Scale down now" open a confirmation page;
confirming records the decision (a window that reconciliation respects) and queues the task.
Rows are written by the services only: nothing here is editable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from mangaassist.celery import enqueue_on_commit

from . import schedule, selectors, services, tasks
from .models import CapacityWindow, ProvisionedThroughput, ThroughputAction, ThroughputStatus, Trigger

OPERATE_PERMISSION = "throughput.operate_provisionedthroughput"
MAX_MANUAL_HOURS = 12


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by the services; the admin shows it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@dataclass(frozen=True)
class BeatEntryView:
    name: str
    schedule: str
    enabled: bool
    last_run_at: Any
    change_url: str | None


def _state_label(row: ProvisionedThroughput | None) -> str:
    if row is None:
        return "none"
    return {
        ThroughputStatus.REQUESTED: "creating (create call sent)",
        ThroughputStatus.CREATING: "creating",
        ThroughputStatus.IN_SERVICE: "in service",
        ThroughputStatus.DRAINING: "draining (being deleted)",
    }.get(row.status, row.get_status_display())


def _beat_entries() -> list[BeatEntryView]:
    from django_celery_beat.models import PeriodicTask

    names = [entry.name for entry in schedule.beat_entries()]
    installed = {task.name: task for task in PeriodicTask.objects.filter(name__in=names).select_related("crontab")}
    views = []
    for name in names:
        task = installed.get(name)
        if task is None:
            views.append(BeatEntryView(name, "not installed (run migrate)", False, None, None))
            continue
        views.append(BeatEntryView(
            name, str(task.crontab) if task.crontab else str(task.scheduler), task.enabled, task.last_run_at,
            reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])))
    return views


class KeepUpForm(forms.Form):
    hours = forms.IntegerField(min_value=1, max_value=MAX_MANUAL_HOURS, initial=1,
                               help_text="Capacity stays at least this long; peak hours may keep it longer.")


@admin.register(ProvisionedThroughput)
class ProvisionedThroughputAdmin(ReadOnlyAdmin):
    change_list_template = "admin/throughput/provisionedthroughput/change_list.html"
    list_display = ["name", "status", "trigger", "requested_by", "requested_at", "in_service_at", "ended_at",
                    "model_units", "commitment"]
    list_filter = ["status", "trigger", "purpose"]
    search_fields = ["name", "arn"]
    date_hierarchy = "requested_at"

    def get_urls(self) -> list[Any]:
        custom = [
            path("scale-up/", self.admin_site.admin_view(self.scale_up_view), name="throughput_scale_up"),
            path("scale-down/", self.admin_site.admin_view(self.scale_down_view), name="throughput_scale_down"),
        ]
        return custom + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        now = timezone.now()
        active = selectors.throughput_active()
        lookback = settings.PROVISIONED_ALARM_LOOKBACK_MINUTES
        context = {
            "enabled": settings.PROVISIONED_THROUGHPUT_ENABLED,
            "active": active,
            "state": _state_label(active),
            "plan": selectors.capacity_plan(now=now),
            "route": selectors.routable_arn(now=now),
            "latency": selectors.first_token_p95(since=now - timedelta(minutes=lookback), until=now),
            "lookback_minutes": lookback,
            "alarm_threshold_ms": settings.PROVISIONED_ALARM_P95_MS,
            "alarm_hours_used": selectors.alarm_seconds_granted(now=now) / 3600,
            "alarm_hours_cap": settings.PROVISIONED_ALARM_MAX_HOURS_PER_DAY,
            "cost": selectors.cost_estimate(now=now),
            "beat_entries": _beat_entries(),
            "schedule_timezone": str(schedule.SCHEDULE_TIMEZONE),
            "recent_actions": selectors.actions_recent(),
            "can_operate": request.user.has_perm(OPERATE_PERMISSION),
        }
        return super().changelist_view(request, extra_context={**context, **(extra_context or {})})

    # --- by hand -------------------------------------------------------------------------------------

    def _check_operate(self, request: HttpRequest) -> None:
        if not request.user.has_perm(OPERATE_PERMISSION):
            raise PermissionDenied

    def _confirm(self, request: HttpRequest, *, direction: str, form: forms.Form | None) -> TemplateResponse:
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Scale provisioned throughput {direction} now?",
            "direction": direction,
            "form": form,
            "enabled": settings.PROVISIONED_THROUGHPUT_ENABLED,
            "active": selectors.throughput_active(),
            "state": _state_label(selectors.throughput_active()),
            "plan": selectors.capacity_plan(now=now),
            "model_id": settings.PROVISIONED_MODEL_ID,
            "model_units": settings.PROVISIONED_MODEL_UNITS,
            "commitment": settings.PROVISIONED_COMMITMENT,
            "hourly_usd": settings.PROVISIONED_MODEL_UNITS * settings.PROVISIONED_HOURLY_PRICE_USD,
            "drain_seconds": settings.PROVISIONED_DRAIN_SECONDS,
        }
        return TemplateResponse(request, "admin/throughput/confirm_scale.html", context)

    def _back(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:throughput_provisionedthroughput_changelist"))

    def scale_up_view(self, request: HttpRequest) -> HttpResponse:
        """GET: what scaling up costs and means; POST: record the decision and queue the scale-up."""
        self._check_operate(request)
        form = KeepUpForm(request.POST if request.method == "POST" else None)
        if request.method != "POST" or not form.is_valid():
            return self._confirm(request, direction="up", form=form)
        if not settings.PROVISIONED_THROUGHPUT_ENABLED:
            messages.error(request, f"Nothing done: {services.NOT_ENABLED}.")
            return self._back()
        actor = f"admin:{request.user.get_username()}"
        window = services.throughput_keep_up(now=timezone.now(), actor=actor, hours=form.cleaned_data["hours"])
        enqueue_on_commit(tasks.throughput_scale_up_task, kwargs={"actor": actor, "trigger": Trigger.MANUAL},
                          expires=15 * 60)
        messages.success(request, f"Scale-up queued; capacity is wanted until {services.jst(window.ends_at)}. "
                                  "Turns go to it once it is InService.")
        return self._back()

    def scale_down_view(self, request: HttpRequest) -> HttpResponse:
        """GET: what scaling down means; POST: record the decision and queue the scale-down."""
        self._check_operate(request)
        if request.method != "POST":
            return self._confirm(request, direction="down", form=None)
        if not settings.PROVISIONED_THROUGHPUT_ENABLED:
            messages.error(request, f"Nothing done: {services.NOT_ENABLED}.")
            return self._back()
        actor = f"admin:{request.user.get_username()}"
        window = services.throughput_keep_down(now=timezone.now(), actor=actor)
        enqueue_on_commit(tasks.throughput_scale_down_task, kwargs={"actor": actor}, expires=15 * 60)
        messages.success(request, f"Scale-down queued; no capacity until {services.jst(window.ends_at)} "
                                  "(the next scheduled scale-up), alarm included.")
        return self._back()


@admin.register(ThroughputAction)
class ThroughputActionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "result", "detail", "throughput"]
    list_filter = ["action", "result"]
    search_fields = ["actor", "detail", "arn"]
    date_hierarchy = "created_at"
    list_select_related = ["throughput"]


@admin.register(CapacityWindow)
class CapacityWindowAdmin(ReadOnlyAdmin):
    list_display = ["kind", "starts_at", "ends_at", "created_by", "note"]
    list_filter = ["kind"]
    date_hierarchy = "starts_at"
