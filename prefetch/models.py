"""Speculative prefetch as data: which turn tends to follow which, and what to warm for it.

PMs edit these rows in the admin; every process reads them through the cache
(prefetch.selectors.prefetch_config), and a save or delete invalidates that copy
once it commits (prefetch.signals).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from chat.intents import INTENTS

INTENT_CHOICES = [(intent, intent) for intent in INTENTS]


class PrefetchKey(models.TextChoices):
    """What a transition warms in the cache for the products the answer just showed."""

    DETAILS = "details", "Product details"
    REVIEWS = "reviews", "Review summaries"
    SIMILAR = "similar", "Similar items (and their details)"
    TRENDING = "trending", "Trending items (and their details)"
    CART = "cart", "Cart summary"
    PROMOTIONS = "promotions", "Running promotions"


# Rounding slack when probabilities entered as decimals are added up as floats.
PROBABILITY_EPSILON = 1e-6

# DESIGN.md §8: (from intent, to intent, probability, what to prefetch). Migration 0002 holds a
# frozen copy; tests compare the two.
STARTING_TRANSITIONS: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("product_discovery", "product_question", 0.45, ("details", "reviews")),
    ("product_discovery", "recommendation", 0.30, ("similar",)),
    ("product_discovery", "checkout_help", 0.10, ("cart",)),
    ("recommendation", "product_question", 0.50, ("details", "reviews")),
    ("recommendation", "product_discovery", 0.20, ("trending",)),
    ("recommendation", "checkout_help", 0.15, ("cart",)),
    ("product_question", "checkout_help", 0.30, ("cart", "promotions")),
    ("product_question", "recommendation", 0.25, ("similar",)),
    ("product_question", "product_question", 0.20, ("details",)),
)


def probability_validators() -> list:
    return [MinValueValidator(0.0), MaxValueValidator(1.0)]


def check_prefetch_keys(value: object) -> list[str]:
    """The keys as a list of known, distinct PrefetchKey values, or a ValidationError."""
    if not isinstance(value, list) or any(k not in PrefetchKey.values for k in value):
        raise ValidationError(f"A list of keys from {', '.join(PrefetchKey.values)}.")
    if len(set(value)) != len(value):
        raise ValidationError("Each key once.")
    return value


class Transition(models.Model):
    """P(next intent = to_intent | this intent = from_intent), and what to warm when it is likely."""

    from_intent = models.CharField(max_length=32, choices=INTENT_CHOICES)
    to_intent = models.CharField(max_length=32, choices=INTENT_CHOICES)
    probability = models.FloatField(validators=probability_validators(),
                                     help_text="The probabilities of one 'from' intent add up to at most 1.")
    prefetch_keys = models.JSONField(default=list, blank=True,
                                     help_text=f"Any of: {', '.join(PrefetchKey.values)}.")
    enabled = models.BooleanField(default=True, help_text="Off: keep the probability, prefetch nothing for it.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["from_intent", "-probability", "to_intent"]
        constraints = [
            models.UniqueConstraint(fields=["from_intent", "to_intent"], name="one_transition_per_intent_pair"),
            models.CheckConstraint(condition=models.Q(probability__gte=0.0, probability__lte=1.0),
                                   name="transition_probability_between_0_and_1"),
        ]

    def __str__(self) -> str:
        return f"{self.from_intent} -> {self.to_intent} ({self.probability:.2f})"

    def clean(self) -> None:
        check_prefetch_keys(self.prefetch_keys)
        if self.from_intent and self.probability is not None:
            total = self.probability + sum(self.sibling_probabilities().values())
            if total > 1 + PROBABILITY_EPSILON:
                raise ValidationError({"probability": (
                    f"The transitions from {self.from_intent} would add up to {total:.2f}; at most 1.00.")})

    def sibling_probabilities(self) -> dict[int, float]:
        """The other transitions from the same intent: as stored, or as edited beside this one.

        A changelist edit changes several rows at once; its formset puts the values being
        submitted in `pending_probabilities` so each row is judged against the others' new values.
        """
        pending: dict[int, float] = getattr(self, "pending_probabilities", {})
        others = Transition.objects.filter(from_intent=self.from_intent).exclude(pk=self.pk)
        return {pk: pending.get(pk, probability) for pk, probability in others.values_list("pk", "probability")}


class PrefetchSettings(models.Model):
    """The one row of prefetch settings (DESIGN.md §8 starting values)."""

    SINGLETON_PK = 1

    enabled = models.BooleanField(default=True, help_text="Off: no prefetch is queued after an answer.")
    threshold = models.FloatField(default=0.25, validators=probability_validators(),
                                  help_text="Transitions at least this likely are prefetched.")
    deadline_seconds = models.FloatField(default=2.0, validators=[MinValueValidator(0.05), MaxValueValidator(30.0)],
                                         help_text="A prefetch stops warming when this time is up.")
    max_products_per_key = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="At most this many of the products just shown are warmed per key.")
    auto_apply_relearned = models.BooleanField(
        default=False, help_text="Apply relearned probabilities at once instead of leaving them as proposals.")
    relearn_min_samples = models.PositiveIntegerField(
        default=30, help_text="A 'from' intent is relearned only with at least this many observed follow-ups.")
    relearn_smoothing = models.FloatField(
        default=20.0, validators=[MinValueValidator(0.0)],
        help_text="Weight of the current probability, in observations: (count + k * current) / (n + k).")
    relearn_window_days = models.PositiveIntegerField(default=28, validators=[MinValueValidator(1)],
                                                      help_text="Relearning reads the answers of this many days.")
    # Speculation: the single most likely follow-up prepared before it is asked (prefetch.speculation).
    speculation_enabled = models.BooleanField(
        default=True, help_text="Prepare the single most likely follow-up after an answer: its prompt, the model's "
                                "prefix cache and, with pre-generation, the answer itself.")
    speculation_threshold = models.FloatField(
        default=0.45, validators=probability_validators(),
        help_text="Only a follow-up at least this likely is prepared (higher than the prefetch threshold).")
    pregenerate = models.BooleanField(
        default=True, help_text="Generate the predicted answer in advance; it is shown only when the next message "
                                "asks exactly that. Off: only the prompt and the model's prefix cache are prepared.")
    speculative_max_output_tokens = models.PositiveIntegerField(
        default=320, validators=[MinValueValidator(16), MaxValueValidator(4000)],
        help_text="Longest pre-generated answer, in output tokens; a longer one is discarded, never shown cut.")
    speculative_conversation_token_budget = models.PositiveIntegerField(
        default=6000, help_text="Tokens (prompt + output) speculation may spend on one conversation (0: none).")
    speculative_daily_token_budget = models.PositiveIntegerField(
        default=2_000_000, help_text="Tokens (prompt + output) speculation may spend per day, Asia/Tokyo, across "
                                     "all conversations (0: none).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "prefetch settings"
        verbose_name_plural = "prefetch settings"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="prefetch_settings_single_row")]

    def __str__(self) -> str:
        return "Prefetch settings"

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class ProposalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPLIED = "applied", "Applied"
    SUPERSEDED = "superseded", "Superseded by a newer relearning"


class TransitionProposal(models.Model):
    """A probability relearned from what customers asked next, waiting for a PM (or auto-applied)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_intent = models.CharField(max_length=32, choices=INTENT_CHOICES)
    to_intent = models.CharField(max_length=32, choices=INTENT_CHOICES)
    current_probability = models.FloatField(null=True, help_text="Empty: no such transition yet.")
    proposed_probability = models.FloatField(validators=probability_validators())
    observed = models.PositiveIntegerField(help_text="Follow-ups from_intent -> to_intent in the window.")
    samples = models.PositiveIntegerField(help_text="All follow-ups of from_intent in the window.")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=ProposalStatus.choices, default=ProposalStatus.PENDING)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "from_intent", "-proposed_probability"]
        indexes = [models.Index(fields=["status", "from_intent"])]

    def __str__(self) -> str:
        current = "new" if self.current_probability is None else f"{self.current_probability:.2f}"
        return f"{self.from_intent} -> {self.to_intent}: {current} -> {self.proposed_probability:.2f}"


class PrefetchOutcome(models.Model):
    """Whether one turn found what the previous turn's prefetch warmed for it (hit rate by transition)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    conversation_id = models.UUIDField(db_index=True)
    client_message_id = models.CharField(max_length=64, blank=True)
    from_intent = models.CharField(max_length=32)
    to_intent = models.CharField(max_length=32)
    predicted = models.BooleanField(help_text="to_intent was among the transitions prefetched for.")
    hit = models.BooleanField(null=True, help_text="Empty: nothing was predicted, or the turn needed nothing.")
    keys = models.JSONField(default=dict, blank=True, help_text="Per key the turn needed: hit, warm (not by "
                                                                  "the prefetch) or miss.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["from_intent", "to_intent", "created_at"])]

    def __str__(self) -> str:
        result = "no prediction" if self.hit is None else ("hit" if self.hit else "miss")
        return f"{self.from_intent} -> {self.to_intent}: {result}"
