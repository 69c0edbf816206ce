"""Transitions are data: DESIGN.md §8 starting values, and probabilities that never add up past 1."""

from __future__ import annotations

import importlib

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from prefetch.models import STARTING_TRANSITIONS, PrefetchSettings, Transition
from prefetch.services import transitions_starting_values_install


@pytest.mark.django_db
class StartingValuesTests:
    def test_the_migration_installs_the_design_transitions_and_settings(self) -> None:
        rows = {(t.from_intent, t.to_intent): (t.probability, tuple(t.prefetch_keys), t.enabled)
                for t in Transition.objects.all()}
        assert rows == {(f, t): (p, keys, True) for f, t, p, keys in STARTING_TRANSITIONS}
        assert rows[("product_discovery", "product_question")] == (0.45, ("details", "reviews"), True)
        assert rows[("product_question", "checkout_help")] == (0.30, ("cart", "promotions"), True)
        settings = PrefetchSettings.objects.get()
        assert (settings.threshold, settings.deadline_seconds, settings.max_products_per_key) == (0.25, 2.0, 3)
        assert settings.enabled and not settings.auto_apply_relearned

    def test_the_migration_copy_agrees_with_the_code(self) -> None:
        migration = importlib.import_module("prefetch.migrations.0002_starting_values")
        assert [(f, t, p, tuple(k)) for f, t, p, k in migration.TRANSITIONS] == list(STARTING_TRANSITIONS)

    def test_installing_again_changes_nothing_a_pm_edited(self) -> None:
        Transition.objects.filter(from_intent="product_discovery", to_intent="recommendation").update(probability=0.4)
        assert transitions_starting_values_install() == 0
        assert Transition.objects.count() == len(STARTING_TRANSITIONS)
        assert Transition.objects.get(from_intent="product_discovery", to_intent="recommendation").probability == 0.4

    def test_there_is_one_settings_row(self) -> None:
        PrefetchSettings(threshold=0.5).save()  # saving "another" row updates the one there is
        assert PrefetchSettings.objects.count() == 1 and PrefetchSettings.objects.get().threshold == 0.5


@pytest.mark.django_db
class TransitionValidationTests:
    def test_a_new_transition_that_takes_the_sum_past_one_is_refused(self) -> None:
        # product_discovery: 0.45 + 0.30 + 0.10 = 0.85 already.
        with pytest.raises(ValidationError) as refused:
            Transition(from_intent="product_discovery", to_intent="faq", probability=0.2).full_clean()
        assert "add up to 1.05" in str(refused.value.message_dict["probability"])
        Transition(from_intent="product_discovery", to_intent="faq", probability=0.15).full_clean()

    def test_raising_a_transition_is_judged_against_the_other_rows(self) -> None:
        row = Transition.objects.get(from_intent="recommendation", to_intent="product_question")
        row.probability = 0.65  # 0.65 + 0.20 + 0.15 = 1.00
        row.full_clean()
        row.probability = 0.66
        with pytest.raises(ValidationError):
            row.full_clean()

    def test_another_intents_transitions_do_not_count(self) -> None:
        Transition(from_intent="faq", to_intent="product_question", probability=1.0).full_clean()

    def test_unknown_prefetch_keys_and_intents_are_refused(self) -> None:
        with pytest.raises(ValidationError):
            Transition(from_intent="faq", to_intent="checkout_help", probability=0.1,
                       prefetch_keys=["cart", "weather"]).full_clean()
        with pytest.raises(ValidationError):
            Transition(from_intent="faq", to_intent="small_talk", probability=0.1).full_clean()

    def test_the_database_refuses_a_probability_outside_0_and_1(self) -> None:
        with pytest.raises(IntegrityError), transaction.atomic():
            Transition.objects.create(from_intent="faq", to_intent="chitchat", probability=1.5)

    def test_one_row_per_intent_pair(self) -> None:
        with pytest.raises(ValidationError) as refused:
            Transition(from_intent="product_discovery", to_intent="product_question", probability=0.01).full_clean()
        assert "__all__" in refused.value.message_dict
