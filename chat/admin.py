from django.contrib import admin

from .models import Conversation, Turn


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    can_delete = False
    fields = ["created_at", "role", "client_message_id", "text", "status", "failure_reason", "intent", "metrics"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


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
