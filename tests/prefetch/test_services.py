"""Warming the cache for the likely next turn, recording how it went, relearning the probabilities."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Callable

import pytest
from django.core.cache import cache
from django.utils import timezone
from prometheus_client import REGISTRY

from catalog.retrieval import get_index
from chat.assembly import PROMOTIONS_KEY, facts_key, load_product_facts, reviews_key
from chat.models import TurnRecord, TurnStatus
from prefetch.models import PrefetchOutcome, PrefetchSettings, ProposalStatus, Transition, TransitionProposal
from prefetch.selectors import (TRENDING_KEY, PrefetchLookup, cart_key, prediction_key, prefetch_lookup,
                                similar_key)
from prefetch.services import (PrefetchResult, prefetch_for_turn, prefetch_outcome_record, similar_products,
                               transitions_relearn)
from store.selectors import cart_facts
from store.services import cart_add

SESSION = "prefetch-test-session"


def _prefetch(intent: str, ids: list[int], conversation: str = "", session_key: str = SESSION) -> PrefetchResult:
    return prefetch_for_turn(intent=intent, product_ids=ids, session_key=session_key,
                             conversation_id=conversation or str(uuid.uuid4()))


@pytest.mark.usefixtures("transitions")
class PrefetchForTurnTests:
    def test_warms_the_keys_of_the_likely_transitions_for_the_first_products_only(self, shown: list[int]) -> None:
        result = _prefetch("product_discovery", shown[:5])
        # product_question 0.45 (details, reviews) and recommendation 0.30 (similar) are at or over 0.25;
        # checkout_help 0.10 (cart) is not.
        assert result.transitions == ["product_question", "recommendation"]
        first, rest = shown[:3], shown[3:5]
        similar = {pid: similar_products(get_index(), pid, limit=3) for pid in first}
        expected = ({facts_key(pid) for pid in first} | {reviews_key(pid) for pid in first}
                    | {similar_key(pid) for pid in first}
                    | {facts_key(sid) for ids in similar.values() for sid in ids})
        assert set(result.warmed) == expected and not result.skipped and not result.deadline_reached
        cached = cache.get_many(list(expected) + [reviews_key(p) for p in rest] + [similar_key(p) for p in rest]
                                + [cart_key(SESSION), TRENDING_KEY, PROMOTIONS_KEY])
        assert set(cached) == expected  # nothing for the 4th and 5th product, no cart, no trending
        assert {pid: cached[similar_key(pid)] for pid in first} == similar
        assert cached[facts_key(first[0])].id == first[0]

    def test_skips_what_is_already_cached(self, shown: list[int]) -> None:
        load_product_facts(shown[:2])  # the answer's own assembly cached these
        result = _prefetch("product_discovery", shown[:3])
        assert {facts_key(shown[0]), facts_key(shown[1])} <= set(result.skipped)
        assert facts_key(shown[2]) in result.warmed
        assert not {facts_key(shown[0]), facts_key(shown[1])} & set(result.warmed)

    def test_running_twice_warms_nothing_the_second_time(self, shown: list[int]) -> None:
        first = _prefetch("product_discovery", shown[:3])
        second = _prefetch("product_discovery", shown[:3])
        assert first.warmed and not second.warmed
        assert set(second.skipped) == set(first.covered)

    def test_stops_when_the_deadline_is_up(self, shown: list[int], prefetch_settings_set: Callable) -> None:
        # Far below the admin's 0.05 s minimum (save() does not validate): too little for 20 products.
        prefetch_settings_set(deadline_seconds=0.002, max_products_per_key=20)
        started = time.monotonic()
        result = _prefetch("product_discovery", shown[:25])
        assert time.monotonic() - started < 1.0
        assert result.deadline_reached and result.not_reached and len(result.product_ids) == 20
        assert not cache.get_many(result.not_reached)  # what was left is not in the cache
        # With time enough, the same prefetch finishes what the first one left.
        prefetch_settings_set(deadline_seconds=30)
        finished = _prefetch("product_discovery", shown[:25])
        assert not finished.deadline_reached and not finished.not_reached
        assert set(result.not_reached) <= set(finished.warmed)
        assert set(result.covered) <= set(finished.skipped)

    def test_a_product_question_warms_the_cart_and_the_promotions(self, shown: list[int]) -> None:
        from catalog.models import Product

        cart_add(session_key=SESSION, sku=Product.objects.get(id=shown[0]).sku, volume=1)
        result = _prefetch("product_question", shown[:1])
        # checkout_help 0.30 (cart, promotions), recommendation 0.25 (similar); product_question 0.20 is under.
        assert result.transitions == ["checkout_help", "recommendation"]
        assert cache.get(cart_key(SESSION)) == cart_facts(session_key=SESSION)
        assert PROMOTIONS_KEY in result.warmed and similar_key(shown[0]) in result.warmed
        assert reviews_key(shown[0]) not in result.covered

    def test_no_session_no_cart(self, shown: list[int]) -> None:
        result = _prefetch("product_question", shown[:1], session_key="")
        assert not [key for key in result.covered if key.startswith("store:cart:")]

    def test_trending_is_the_most_popular_series(self, shown: list[int], prefetch_settings_set: Callable) -> None:
        prefetch_settings_set(threshold=0.2)  # recommendation -> product_discovery 0.20 (trending) is now likely
        result = _prefetch("recommendation", shown[3:4])
        assert "product_discovery" in result.transitions
        top = sorted(get_index().items, key=lambda item: -item.popularity)[:3]
        assert cache.get(TRENDING_KEY) == [item.product_id for item in top]
        assert {facts_key(item.product_id) for item in top} <= set(result.covered)

    def test_a_transition_switched_off_is_not_prefetched(self, shown: list[int]) -> None:
        Transition.objects.get(from_intent="product_discovery", to_intent="recommendation").save()  # same values
        row = Transition.objects.get(from_intent="product_discovery", to_intent="recommendation")
        row.enabled = False
        row.save()
        result = _prefetch("product_discovery", shown[:3])
        assert result.transitions == ["product_question"]
        assert not [key for key in result.warmed if key.startswith("product:similar:")]

    def test_intents_without_likely_follow_ups_warm_nothing(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        result = _prefetch("order_tracking", shown[:3], conversation)
        assert not result.transitions and not result.warmed and cache.get(prediction_key(conversation)) is None

    def test_records_what_it_expects_and_what_it_covered(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        result = _prefetch("product_discovery", shown[:3], conversation)
        record = cache.get(prediction_key(conversation))
        assert record["from_intent"] == "product_discovery" and record["product_ids"] == shown[:3]
        assert record["predicted"] == {"product_question": ["details", "reviews"], "recommendation": ["similar"]}
        assert set(record["keys"]) == set(result.covered) and record["at"] <= time.time()

    def test_an_older_prefetch_finishing_late_does_not_overwrite_a_newer_prediction(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        prefetch_for_turn(intent="product_question", product_ids=shown[:1], session_key=SESSION,
                          conversation_id=conversation, predicted_at=time.time())
        prefetch_for_turn(intent="product_discovery", product_ids=shown[:3], session_key=SESSION,
                          conversation_id=conversation, predicted_at=time.time() - 60)
        assert cache.get(prediction_key(conversation))["from_intent"] == "product_question"


def _lookups(result: str, transition: str) -> float:
    return REGISTRY.get_sample_value("mangaassist_prefetch_lookups_total",
                                     {"result": result, "transition": transition}) or 0.0


@pytest.mark.django_db
class OutcomeRecordTests:
    def test_a_follow_up_is_counted_and_stored_by_transition(self) -> None:
        conversation = uuid.uuid4()
        hits_before = _lookups("hit", "product_discovery->product_question")
        lookup = PrefetchLookup(from_intent="product_discovery", to_intent="product_question", predicted=True,
                                hit=True, keys={"details": "hit", "reviews": "hit"})
        outcome = prefetch_outcome_record(conversation_id=conversation, lookup=lookup, client_message_id="m2")
        assert _lookups("hit", "product_discovery->product_question") == hits_before + 1
        assert outcome is not None and PrefetchOutcome.objects.get() == outcome
        assert (outcome.conversation_id, outcome.predicted, outcome.hit, outcome.keys) == (
            conversation, True, True, {"details": "hit", "reviews": "hit"})

    def test_a_miss_is_counted_as_a_miss(self) -> None:
        misses_before = _lookups("miss", "recommendation->checkout_help")
        lookup = PrefetchLookup(from_intent="recommendation", to_intent="checkout_help", predicted=False, hit=False,
                                keys={"cart": "miss"})
        prefetch_outcome_record(conversation_id=uuid.uuid4(), lookup=lookup)
        assert _lookups("miss", "recommendation->checkout_help") == misses_before + 1

    def test_without_a_prediction_nothing_is_counted_but_the_turn_is_stored(self) -> None:
        before = _lookups("miss", "order_tracking->faq") + _lookups("hit", "order_tracking->faq")
        lookup = prefetch_lookup(conversation_id=uuid.uuid4(), intent="faq", product_ids=[], session_key="s",
                                 previous_intent="order_tracking")
        outcome = prefetch_outcome_record(conversation_id=uuid.uuid4(), lookup=lookup)
        assert _lookups("miss", "order_tracking->faq") + _lookups("hit", "order_tracking->faq") == before
        assert outcome is not None and outcome.hit is None and not outcome.predicted

    def test_a_first_turn_is_not_stored(self) -> None:
        lookup = prefetch_lookup(conversation_id=uuid.uuid4(), intent="product_discovery", product_ids=[],
                                 session_key="s")
        assert prefetch_outcome_record(conversation_id=uuid.uuid4(), lookup=lookup) is None
        assert prefetch_outcome_record(conversation_id=uuid.uuid4(), lookup=None) is None
        assert not PrefetchOutcome.objects.exists()


def _follow_ups(previous_intent: str, intent: str, count: int, *, days_ago: float = 1) -> None:
    records = TurnRecord.objects.bulk_create(
        TurnRecord(client_message_id=f"{previous_intent}-{intent}-{n}", previous_intent=previous_intent,
                   intent=intent, status=TurnStatus.COMPLETE) for n in range(count))
    TurnRecord.objects.filter(pk__in=[r.pk for r in records]).update(
        created_at=timezone.now() - timedelta(days=days_ago))


def _proposed(from_intent: str) -> dict[str, float]:
    return dict(TransitionProposal.objects.filter(from_intent=from_intent, status=ProposalStatus.PENDING)
                .values_list("to_intent", "proposed_probability"))


def _probabilities(from_intent: str) -> dict[str, float]:
    return dict(Transition.objects.filter(from_intent=from_intent).values_list("to_intent", "probability"))


@pytest.mark.django_db
class RelearnTests:
    def test_observed_follow_ups_are_smoothed_toward_the_current_probabilities(self) -> None:
        _follow_ups("product_discovery", "product_question", 30)
        _follow_ups("product_discovery", "recommendation", 10)
        result = transitions_relearn(min_samples=30, smoothing=20)
        # n = 40, k = 20: (c + 20 p) / 60, rounded down to 4 places.
        assert _proposed("product_discovery") == {
            "product_question": 0.65,  # (30 + 9) / 60
            "recommendation": 0.2666,  # (10 + 6) / 60
            "checkout_help": 0.0333,  # (0 + 2) / 60
        }
        assert sum(_proposed("product_discovery").values()) <= 1
        assert not result.applied and _probabilities("product_discovery")["product_question"] == 0.45
        proposal = TransitionProposal.objects.get(to_intent="recommendation")
        assert (proposal.current_probability, proposal.observed, proposal.samples) == (0.30, 10, 40)

    def test_intents_with_fewer_samples_than_the_minimum_are_left_alone(self) -> None:
        _follow_ups("recommendation", "product_question", 29)
        _follow_ups("product_question", "checkout_help", 30)
        result = transitions_relearn(min_samples=30, smoothing=20)
        assert result.too_few == {"recommendation": 29}
        assert not _proposed("recommendation")
        # n = 30, k = 20: checkout_help (30 + 20 x 0.30) / 50, the others 20 p / 50.
        assert _proposed("product_question") == {"checkout_help": 0.72, "recommendation": 0.1, "product_question": 0.08}

    def test_without_smoothing_the_proposal_is_the_observed_share(self) -> None:
        _follow_ups("faq", "faq", 24)
        _follow_ups("faq", "order_tracking", 8)
        transitions_relearn(min_samples=30, smoothing=0)
        assert _proposed("faq") == {"faq": 0.75, "order_tracking": 0.25}

    def test_answers_outside_the_window_and_first_turns_do_not_count(self) -> None:
        _follow_ups("product_discovery", "product_question", 40, days_ago=40)
        _follow_ups("", "product_discovery", 40)
        result = transitions_relearn(min_samples=30, smoothing=20, window_days=28)
        assert not result.proposals and not TransitionProposal.objects.exists()

    def test_auto_apply_sets_the_probabilities_and_creates_new_transitions_without_keys(self) -> None:
        PrefetchSettings.objects.update(auto_apply_relearned=True)
        _follow_ups("product_discovery", "product_question", 30)
        _follow_ups("product_discovery", "faq", 10)
        result = transitions_relearn(min_samples=30, smoothing=20)
        assert result.applied
        assert _probabilities("product_discovery") == {"product_question": 0.65, "recommendation": 0.1,
                                                      "checkout_help": 0.0333, "faq": 0.1666}
        new = Transition.objects.get(from_intent="product_discovery", to_intent="faq")
        assert new.prefetch_keys == [] and new.enabled
        assert not TransitionProposal.objects.exclude(status=ProposalStatus.APPLIED).exists()

    def test_a_newer_relearning_supersedes_and_a_repeat_within_hours_does_nothing(self) -> None:
        _follow_ups("product_discovery", "product_question", 40)
        now = timezone.now()
        first = transitions_relearn(now=now - timedelta(days=1), min_samples=30, smoothing=20)
        assert transitions_relearn(now=now - timedelta(days=1, hours=-1), min_samples=30).ran_recently
        second = transitions_relearn(now=now, min_samples=30, smoothing=20)
        assert first.proposals and second.proposals
        assert set(TransitionProposal.objects.filter(pk__in=[p.pk for p in first.proposals])
                   .values_list("status", flat=True)) == {ProposalStatus.SUPERSEDED}
        assert len(_proposed("product_discovery")) == 3
