from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString, mark_safe

from .models import Conversation, Turn, TurnRecord


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _hit(value: bool | None, *, none: str) -> str:
    return none if value is None else ("hit" if value else "miss")


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    can_delete = False
    # The answer's latency breakdown comes from its TurnRecord (the raw `metrics` JSON says the same, less readably).
    fields = ["created_at", "role", "client_message_id", "text", "status", "failure_reason", "intent",
              "latency_breakdown"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        # One query for the transcript and its records, not one per answer.
        return super().get_queryset(request).select_related("record")

    @admin.display(description="Latency breakdown")
    def latency_breakdown(self, turn: Turn) -> SafeString | str:
        """What the answer cost, from its TurnRecord; customer turns have none."""
        try:
            record = turn.record
        except TurnRecord.DoesNotExist:
            return "–"
        degraded = ", ".join(f"{source} ({reason})" for source, reason in (record.degraded_sources or {}).items())
        rows = [
            ("First token", f"{_ms(record.first_token_ms)} (browser {_ms(record.client_first_token_ms)})"),
            ("Total", _ms(record.total_ms)),
            ("Output tokens", f"{record.output_tokens:,}"),
            ("Prompt tokens", f"{record.prompt_tokens:,} (raw {record.raw_prompt_tokens:,})"),
            ("Assembly", _ms(record.assembly_ms)),
            ("Degraded sources", degraded or "none"),
            ("Prefetch", _hit(record.prefetch_hit, none="no lookup")),
            ("Provider cache", _hit(record.provider_cache_hit, none="–")),
            ("Route", f"{record.route or 'none'} ({record.backend or 'unknown'})"
                      + (", a prepared answer" if record.speculative else "")),
        ]
        return format_html_join(mark_safe("<br>"), "{}: {}", rows)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "updated_at"]
    readonly_fields = ["id", "session_key", "created_at", "updated_at", "summary", "summary_through", "raw_history_tokens"]
    inlines = [TurnInline]
    date_hierarchy = "created_at"


# --- Prompt configuration: PMs tune budgets and page fields live --------------------------

from .models import IntentPromptConfig, PromptBudget  # noqa: E402


@admin.register(PromptBudget)
class PromptBudgetAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "system", "retrieved", "conversation", "page", "user", "total", "updated_at"]
    list_editable = ["active"]
    readonly_fields = ["updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "active"]}),
        ("Tokens per section", {
            "fields": ["system", "retrieved", "conversation", "page", "user", "total"],
            "description": "Every section is cut to its budget and the whole prompt to the total. "
                           "Changes apply to the next answer in every web process.",
        }),
        (None, {"fields": ["updated_at"]}),
    ]


@admin.register(IntentPromptConfig)
class IntentPromptConfigAdmin(admin.ModelAdmin):
    list_display = ["intent", "page_fields", "updated_at"]
    readonly_fields = ["updated_at"]
