"""PMs tune speculative prefetch live: transitions, settings, relearned proposals, observed hit rates.

Every edit reaches the next turn in every process (prefetch.signals invalidates the cached
configuration on commit). The probabilities of one from-intent add up to at most 1: the
model's clean checks each row against the others, and the changelist's formset hands it the
values being submitted beside it, so lowering one row and raising another in one save works.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseModelFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from . import services
from .models import PrefetchKey, PrefetchOutcome, PrefetchSettings, ProposalStatus, Transition, TransitionProposal
from .selectors import prefetch_config, prefetch_hit_rates

HIT_RATE_DAYS = 7


class TransitionForm(forms.ModelForm):
    prefetch_keys = forms.MultipleChoiceField(choices=PrefetchKey.choices, required=False,
                                              widget=forms.CheckboxSelectMultiple,
                                              help_text="Warmed for the products the answer showed.")

    class Meta:
        model = Transition
        fields = ["from_intent", "to_intent", "probability", "prefetch_keys", "enabled"]

    def clean_prefetch_keys(self) -> list[str]:
        # In PrefetchKey order, whatever order the boxes came in: the stored list reads the same.
        chosen = set(self.cleaned_data["prefetch_keys"])
        return [key for key in PrefetchKey.values if key in chosen]


class TransitionChangelistFormSet(BaseModelFormSet):
    """The changelist's editable rows, judged together."""

    def full_clean(self) -> None:
        # The values as submitted, before any form is cleaned: each row's model clean needs the others'.
        self.pending: dict[int, float] = {}
        for form in self.forms:
            if form.instance.pk is None:
                continue
            try:
                self.pending[form.instance.pk] = float(form["probability"].data)
            except (TypeError, ValueError):
                continue  # the form reports the bad number itself
        for form in self.forms:
            form.instance.pending_probabilities = self.pending
        super().full_clean()

    def clean(self) -> None:
        super().clean()
        totals: dict[str, float] = {}
        intents = {form.instance.from_intent for form in self.forms}
        for pk, from_intent, probability in Transition.objects.filter(from_intent__in=intents).values_list(
                "pk", "from_intent", "probability"):
            totals[from_intent] = totals.get(from_intent, 0.0) + self.pending.get(pk, probability)
        over = [f"{intent} ({total:.2f})" for intent, total in sorted(totals.items()) if total > 1 + 1e-6]
        if over:
            raise ValidationError(f"The transitions from one intent add up to at most 1.00: {', '.join(over)}.")


@admin.register(Transition)
class TransitionAdmin(admin.ModelAdmin):
    form = TransitionForm
    list_display = ["from_intent", "to_intent", "probability", "keys", "enabled", "prefetched", "updated_at"]
    list_display_links = ["from_intent", "to_intent"]
    list_editable = ["probability", "enabled"]
    list_filter = ["from_intent", "enabled"]
    readonly_fields = ["updated_at"]

    def get_changelist_formset(self, request: HttpRequest, **kwargs: Any) -> type[BaseModelFormSet]:
        return super().get_changelist_formset(request, formset=TransitionChangelistFormSet, **kwargs)

    @admin.display(description="Prefetch keys")
    def keys(self, transition: Transition) -> str:
        return ", ".join(transition.prefetch_keys) or "–"

    @admin.display(description="Prefetched now", boolean=True)
    def prefetched(self, transition: Transition) -> bool:
        """Enabled, with keys, and at or above the live threshold."""
        config = prefetch_config()
        return (config.enabled and transition.enabled and bool(transition.prefetch_keys)
                and transition.probability >= config.threshold - 1e-9)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "prefetch_config": prefetch_config()}
        return super().changelist_view(request, extra_context)


@admin.register(PrefetchSettings)
class PrefetchSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "enabled", "threshold", "deadline_seconds", "max_products_per_key",
                    "speculation_enabled", "pregenerate", "auto_apply_relearned", "updated_at"]
    readonly_fields = ["updated_at"]
    fieldsets = [
        ("Prefetch", {"fields": ["enabled", "threshold", "deadline_seconds", "max_products_per_key"],
                      "description": "Applies to the next turn in every process."}),
        ("Relearning (daily, 04:00 Asia/Tokyo)", {
            "fields": ["auto_apply_relearned", "relearn_min_samples", "relearn_smoothing", "relearn_window_days"]}),
        ("Speculation: the most likely follow-up, prepared before it is asked", {
            "fields": ["speculation_enabled", "speculation_threshold", "pregenerate", "speculative_max_output_tokens",
                       "speculative_conversation_token_budget", "speculative_daily_token_budget"],
            "description": "A prepared answer is shown only when the next message asks exactly the predicted "
                           "question about the same product; otherwise the model answers as usual."}),
        (None, {"fields": ["updated_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not PrefetchSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TransitionProposal)
class TransitionProposalAdmin(admin.ModelAdmin):
    list_display = ["from_intent", "to_intent", "current", "proposed_probability", "change", "observed", "samples",
                    "status", "created_at", "applied_by"]
    list_filter = ["status", "from_intent"]
    readonly_fields = [f.name for f in TransitionProposal._meta.fields]
    actions = ["apply_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only; the action below is the only way a proposal changes

    def has_apply_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and request.user.has_perm("prefetch.change_transition")

    @admin.display(description="Current")
    def current(self, proposal: TransitionProposal) -> str:
        return "new" if proposal.current_probability is None else f"{proposal.current_probability:.4f}"

    @admin.display(description="Change")
    def change(self, proposal: TransitionProposal) -> str:
        return f"{proposal.proposed_probability - (proposal.current_probability or 0.0):+.4f}"

    @admin.action(description="Apply selected proposals", permissions=["apply"])
    def apply_selected(self, request: HttpRequest, queryset: QuerySet[TransitionProposal]) -> HttpResponse | None:
        if not self.has_apply_permission(request):
            raise PermissionDenied
        proposals = list(queryset.order_by("from_intent", "-proposed_probability"))
        if request.POST.get("confirm") != "yes":
            context = {**self.admin_site.each_context(request), "opts": self.model._meta, "proposals": proposals,
                       "pending": [p for p in proposals if p.status == ProposalStatus.PENDING],
                       "action": "apply_selected", "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                       "title": "Apply relearned probabilities?"}
            return TemplateResponse(request, "admin/prefetch/transitionproposal/apply_confirmation.html", context)
        try:
            applied = services.check_transition_proposals_apply(proposals=proposals, actor=request.user.get_username())
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, f"Applied {len(applied)} probabilities; the next turns use them.",
                              messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:prefetch_transitionproposal_changelist"))


@admin.register(PrefetchOutcome)
class PrefetchOutcomeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "from_intent", "to_intent", "predicted", "hit", "keys", "conversation_id"]
    list_filter = ["from_intent", "to_intent", "predicted", "hit"]
    readonly_fields = [f.name for f in PrefetchOutcome._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        since = timezone.now() - timedelta(days=HIT_RATE_DAYS)
        extra_context = {**(extra_context or {}), "hit_rates": prefetch_hit_rates(since=since),
                         "hit_rate_days": HIT_RATE_DAYS}
        return super().changelist_view(request, extra_context)
