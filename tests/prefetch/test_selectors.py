"""The next turn's lookup: one cache read says whether the previous answer's prefetch had its context ready."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat import services as chat_services
from chat.assembly import AssembledContext, ContextAssembler, TurnInput, facts_key, load_product_facts
from chat.models import Conversation, TurnStatus
from mangaassist.celery import in_process_wait
from prefetch.selectors import (PrefetchConfig, PrefetchLookup, cart_key, cart_summary, prediction_key, prefetch_config,
                                prefetch_lookup)
from prefetch.services import prediction_record_save, prefetch_enqueue, prefetch_for_turn
from store.selectors import cart_facts
from store.services import cart_add
from tests.prefetch.conftest import CLOSED_BROKER

SESSION = "lookup-session"


def _discovery_prefetched(shown: list[int], conversation: str) -> None:
    prefetch_for_turn(intent="product_discovery", product_ids=shown[:3], session_key=SESSION,
                      conversation_id=conversation)


@pytest.mark.usefixtures("transitions")
class PrefetchLookupTests:
    def test_the_question_about_a_product_just_shown_is_a_hit(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        lookup = prefetch_lookup(conversation_id=conversation, intent="product_question", product_ids=[shown[1]],
                                 session_key=SESSION, previous_intent="product_discovery")
        assert lookup.hit is True and lookup.predicted
        assert lookup.keys == {"details": "hit", "reviews": "hit"}
        assert lookup.transition == "product_discovery->product_question"

    def test_a_recommendation_like_a_product_just_shown_is_a_hit(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        lookup = prefetch_lookup(conversation_id=conversation, intent="recommendation", product_ids=[shown[0]],
                                 session_key=SESSION)
        assert lookup.hit is True and lookup.keys == {"similar": "hit"}

    def test_without_a_prefetch_there_is_no_prediction_to_judge(self, shown: list[int]) -> None:
        load_product_facts(shown[:3])  # warm from the previous answer's own assembly, not from a prefetch
        lookup = prefetch_lookup(conversation_id=uuid.uuid4(), intent="product_question", product_ids=[shown[1]],
                                 session_key=SESSION, previous_intent="product_discovery")
        assert lookup.hit is None and not lookup.predicted and not lookup.keys
        assert lookup.transition == "product_discovery->product_question"

    def test_a_prefetch_that_never_ran_is_a_miss(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        load_product_facts(shown[:3])
        # What prefetch_enqueue records when it queues: the prediction, nothing covered yet.
        prediction_record_save(conversation_id=conversation, from_intent="product_discovery",
                               predicted={"product_question": ["details", "reviews"]}, product_ids=shown[:3],
                               at=time.time(), keys=[])
        lookup = prefetch_lookup(conversation_id=conversation, intent="product_question", product_ids=[shown[1]],
                                 session_key=SESSION, previous_intent="product_discovery")
        # Details are warm (by the earlier answer), reviews are not there: no hit either way.
        assert lookup.hit is False and lookup.predicted and lookup.keys == {"details": "warm", "reviews": "miss"}

    def test_an_unpredicted_follow_up_is_a_miss(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)  # checkout_help (0.10) is under the threshold
        lookup = prefetch_lookup(conversation_id=conversation, intent="checkout_help", product_ids=[],
                                 session_key=SESSION, previous_intent="product_discovery")
        assert lookup.hit is False and not lookup.predicted and lookup.keys == {"cart": "miss"}

    def test_a_product_the_answer_did_not_show_is_a_miss(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        lookup = prefetch_lookup(conversation_id=conversation, intent="product_question", product_ids=[shown[10]],
                                 session_key=SESSION)
        assert lookup.hit is False and lookup.predicted

    def test_a_prediction_from_an_older_turn_is_not_judged(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        lookup = prefetch_lookup(conversation_id=conversation, intent="product_question", product_ids=[shown[1]],
                                 session_key=SESSION, previous_intent="order_tracking")
        assert lookup.hit is None and lookup.from_intent == "order_tracking"

    def test_intents_with_nothing_to_prefetch_are_not_judged(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        lookup = prefetch_lookup(conversation_id=conversation, intent="order_tracking", product_ids=[],
                                 session_key=SESSION)
        assert lookup.hit is None and lookup.from_intent == "product_discovery" and not lookup.predicted

    def test_the_lookup_is_one_cache_read(self, shown: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
        conversation = str(uuid.uuid4())
        _discovery_prefetched(shown, conversation)
        calls: list[str] = []
        inside: list[str] = []  # locmem's get_many calls its own get: count the outermost calls only

        def counted(name: str, original: Callable) -> Callable:
            def call(*args: Any, **kwargs: Any) -> Any:
                if not inside:
                    calls.append(name)
                inside.append(name)
                try:
                    return original(*args, **kwargs)
                finally:
                    inside.pop()
            return call

        for name in ("get", "get_many", "has_key", "set", "set_many"):
            monkeypatch.setattr(cache, name, counted(name, getattr(cache, name)))
        prefetch_lookup(conversation_id=conversation, intent="product_question", product_ids=[shown[1]],
                        session_key=SESSION)
        assert calls == ["get_many"]


async def _turn(assembler: ContextAssembler, conversation: Conversation, message_id: str,
                text: str) -> AssembledContext:
    """One customer turn as the chat path runs it, up to the saved answer."""
    await sync_to_async(chat_services.user_turn_record)(conversation_id=conversation.id, client_message_id=message_id,
                                                        text=text, page={})
    context = await assembler.assemble(TurnInput(conversation_id=conversation.id, client_message_id=message_id,
                                                 text=text, page={}, session_key=conversation.session_key))
    await sync_to_async(chat_services.assistant_turn_record)(
        conversation_id=conversation.id, client_message_id=message_id, text="(answer)", status=TurnStatus.COMPLETE,
        intent=context.intent, product_skus=[p.sku for p in context.products], question_skus=context.named_skus,
        metrics={"previous_intent": context.memory.previous_intent})
    return context


def _prefetched(first: AssembledContext, conversation: Conversation) -> None:
    """What the orchestrator will do once the first answer is saved."""
    assert prefetch_enqueue(context=first, presented_ids=[p.id for p in first.products], session_key=SESSION)
    in_process_wait()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("transitions")
class ConversationTests:
    """Two real turns through the real assembler, the prefetch queued between them as the orchestrator will."""

    async def _two_turns(self, second_text: str, after_first: Callable[[AssembledContext, Conversation], Any],
                         ) -> tuple[AssembledContext, AssembledContext, PrefetchLookup, dict]:
        assembler = ContextAssembler(deadlines={name: 5.0 for name in ("memory", "memory_reference", "retrieval",
                                                                         "store", "prefetch")})
        conversation = await sync_to_async(Conversation.objects.create)(session_key=SESSION)
        first = await _turn(assembler, conversation, "m1", "Show me popular shonen manga")
        assert first.intent == "product_discovery" and len(first.products) == 3
        await sync_to_async(after_first)(first, conversation)
        second = await _turn(assembler, conversation, "m2", second_text)
        # The assembler will ask this before it loads anything itself; here it is asked after.
        seed = [second.seed.id] if second.seed else [p.id for p in second.products]
        lookup = await sync_to_async(prefetch_lookup)(
            conversation_id=conversation.id, intent=second.intent, product_ids=seed,
            session_key=SESSION, previous_intent=second.memory.previous_intent)
        return first, second, lookup, cache.get(prediction_key(conversation.id))

    async def test_the_follow_up_question_finds_its_details_and_reviews_prefetched(self, demo_catalog: None) -> None:
        first, second, lookup, _ = await self._two_turns("Tell me more about the second one", _prefetched)
        assert second.intent == "product_question" and second.products == first.products[1:2]
        assert lookup.hit is True and lookup.transition == "product_discovery->product_question"

    async def test_a_recommendation_like_a_product_shown_finds_its_products_prefetched(self,
                                                                                     demo_catalog: None) -> None:
        first, second, lookup, record = await self._two_turns("Recommend something like the first one", _prefetched)
        assert second.intent == "recommendation" and second.seed == first.products[0]
        assert lookup.hit is True and lookup.keys == {"similar": "hit"}
        # The series the recommendation presents are the ones whose details the prefetch warmed.
        assert {facts_key(p.id) for p in second.products} <= set(record["keys"])

    async def test_with_the_broker_down_the_follow_up_is_a_miss(self, demo_catalog: None, broker: Callable) -> None:
        def not_prefetched(first: AssembledContext, conversation: Conversation) -> None:
            broker(CLOSED_BROKER)
            assert prefetch_enqueue(context=first, presented_ids=[p.id for p in first.products], session_key=SESSION)

        _, _, lookup, _ = await self._two_turns("Tell me more about the second one", not_prefetched)
        # Details are warm from the first answer's own assembly; that is not the prefetch's doing.
        assert lookup.hit is False and lookup.keys["details"] == "warm"


@pytest.mark.django_db(transaction=True)
class ConfigurationTests:
    def test_the_configuration_is_read_through_the_cache(self, transitions: None) -> None:
        config = prefetch_config()
        assert isinstance(config, PrefetchConfig)
        assert [r.to_intent for r in config.predicted("product_discovery")] == ["product_question", "recommendation"]
        from prefetch.models import Transition

        Transition.objects.update(enabled=False)  # no signal: this process keeps its cached copy
        assert prefetch_config() == config
        Transition.objects.first().save()  # a save commits and invalidates
        assert prefetch_config().predicted("product_discovery") == ()


@pytest.mark.django_db(transaction=True)
class CartSummaryTests:
    def test_the_cart_summary_is_cached_until_the_cart_changes(self, demo_catalog: None) -> None:
        from catalog.models import Product

        naruto, bleach = Product.objects.get(title_en="Naruto"), Product.objects.get(title_en="Bleach")
        cart_add(session_key=SESSION, sku=naruto.sku)
        assert cart_summary(session_key=SESSION) == cart_facts(session_key=SESSION) == cache.get(cart_key(SESSION))
        cart_add(session_key=SESSION, sku=bleach.sku)
        assert cache.get(cart_key(SESSION)) is None  # dropped on commit
        assert "Bleach" in cart_summary(session_key=SESSION)
