"""Conversations and their turns: every user turn, every assistant answer, how it ended."""

from __future__ import annotations

import uuid

from django.db import models


class Conversation(models.Model):
    """A chat bound to one browser session (`session_key`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_key = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Rolling summary of the turns older than the verbatim window (chat.tasks).
    summary = models.TextField(blank=True)
    summary_through = models.PositiveIntegerField(default=0, help_text="Turns folded into the summary.")
    # Tokens of every turn so far: what an uncompressed prompt would carry.
    raw_history_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return str(self.id)


class Role(models.TextChoices):
    USER = "user", "Customer"
    ASSISTANT = "assistant", "Assistant"


class TurnStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"


class Turn(models.Model):
    """One message. The assistant turn answering `client_message_id` shares that id."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    role = models.CharField(max_length=16, choices=Role.choices)
    client_message_id = models.CharField(max_length=64)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=TurnStatus.choices, default=TurnStatus.COMPLETE)
    failure_reason = models.CharField(max_length=200, blank=True)
    intent = models.CharField(max_length=32, blank=True)
    # SKUs of the products the answer presented, in order ("the first one" resolves here).
    product_skus = models.JSONField(default=list, blank=True)
    page = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # A message id re-sent after a reconnect is answered once.
            models.UniqueConstraint(fields=["conversation", "client_message_id", "role"], name="one_turn_per_message_and_role"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class TurnRecord(models.Model):
    """One answer's latency breakdown: the dashboard, the alarms and the relearning read these."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.SET_NULL, null=True, related_name="records")
    turn = models.OneToOneField(Turn, on_delete=models.SET_NULL, null=True, related_name="record")
    client_message_id = models.CharField(max_length=64)
    intent = models.CharField(max_length=32, blank=True)
    previous_intent = models.CharField(max_length=32, blank=True)
    route = models.CharField(max_length=32, blank=True)
    backend = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=16, choices=TurnStatus.choices)
    prompt_tokens = models.PositiveIntegerField(default=0)
    raw_prompt_tokens = models.PositiveIntegerField(default=0)
    compression_ratio = models.FloatField(null=True)
    assembly_ms = models.FloatField(null=True)
    overhead_ms = models.FloatField(null=True)
    degraded_sources = models.JSONField(default=dict, blank=True)
    first_token_ms = models.FloatField(null=True)
    total_ms = models.FloatField(null=True)
    client_first_token_ms = models.FloatField(null=True)
    client_total_ms = models.FloatField(null=True)
    output_tokens = models.PositiveIntegerField(default=0)
    prefetch_hit = models.BooleanField(null=True)
    provider_cache_hit = models.BooleanField(default=False)
    speculative = models.BooleanField(default=False, help_text="Served from a pre-generated answer.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["intent", "created_at"]), models.Index(fields=["route", "created_at"])]

    def __str__(self) -> str:
        return f"{self.intent} {self.first_token_ms} ms"


PAGE_CONTEXT_FIELDS = ("current_asin", "store_section", "browsing_history", "cart_asins")


class PromptBudget(models.Model):
    """Token limits of the prompt, per section (DESIGN.md §8). The row marked active is used."""

    name = models.CharField(max_length=60, unique=True, default="default")
    active = models.BooleanField(default=True)
    system = models.PositiveIntegerField(default=200)
    retrieved = models.PositiveIntegerField(default=350)
    conversation = models.PositiveIntegerField(default=200)
    page = models.PositiveIntegerField(default=100)
    user = models.PositiveIntegerField(default=100)
    total = models.PositiveIntegerField(default=2000)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=models.Q(active=True), name="one_active_prompt_budget"),
            models.CheckConstraint(
                condition=models.Q(total__gte=models.F("system") + models.F("retrieved") + models.F("conversation")
                                   + models.F("page") + models.F("user")),
                name="prompt_sections_fit_the_total"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.total} tokens)"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        sections = self.system + self.retrieved + self.conversation + self.page + self.user
        if sections > self.total:
            raise ValidationError(f"The sections add up to {sections} tokens, more than the total of {self.total}.")
        if self.system < 50 or self.user < 20:
            raise ValidationError("The system prompt needs at least 50 tokens and the customer's message at least 20.")


class IntentPromptConfig(models.Model):
    """Which page-context fields the prompt keeps for an intent (DESIGN.md §8)."""

    intent = models.CharField(max_length=32, unique=True)
    page_fields = models.JSONField(default=list, blank=True,
                                   help_text=f"Any of: {', '.join(PAGE_CONTEXT_FIELDS)}.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["intent"]
        verbose_name = "page context per intent"
        verbose_name_plural = "page context per intent"

    def __str__(self) -> str:
        return self.intent

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .intents import INTENTS

        if self.intent not in INTENTS:
            raise ValidationError({"intent": f"Unknown intent; use one of {', '.join(INTENTS)}."})
        if not isinstance(self.page_fields, list) or any(f not in PAGE_CONTEXT_FIELDS for f in self.page_fields):
            raise ValidationError({"page_fields": f"A list of fields from {', '.join(PAGE_CONTEXT_FIELDS)}."})
