"""Prompt compression, live budgets and rolling summaries."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.compression import Chunk, PromptCompressor, TokenBudget, count_tokens, minify
from chat.llm.base import Message
from chat.models import PromptBudget
from tests.conftest import open_chat, saved_turns


def _compress(budget: TokenBudget, **overrides: object) -> object:
    arguments = dict(system="You are   helpful.\n\n\n  Be brief.", summary="", chunks=[], turns=[], page={},
                     page_fields=None, message="Hello")
    arguments.update(overrides)
    return PromptCompressor(budget).compress(**arguments)  # type: ignore[arg-type]


class CompressorTests:
    def test_system_prompt_is_minified(self) -> None:
        assert minify("You are   helpful.\n\n\n  Be brief.  ") == "You are helpful.\nBe brief."

    def test_chunks_are_kept_whole_by_score_and_the_last_cut_at_a_sentence(self) -> None:
        best = Chunk("Best chunk. " * 5, score=0.9)
        second = Chunk("Second chunk sentence one. Second chunk sentence two. " * 4, score=0.5)
        worst = Chunk("Worst chunk. " * 5, score=0.1)
        budget = count_tokens(best.text) + 1 + 25
        prompt = _compress(TokenBudget(retrieved=budget), chunks=[worst, second, best])
        text = prompt.volatile_context.removeprefix("Store data:\n")
        assert text.startswith(best.text) and "Worst" not in text
        kept_second = text[len(best.text) + 1:]
        assert kept_second and second.text.startswith(kept_second) and kept_second.endswith(".")
        assert prompt.tokens["retrieved"] <= budget

    def test_recent_turns_are_kept_newest_first_within_the_budget(self) -> None:
        turns = [Message("user", f"Question number {n} " + "detail " * 20) for n in range(6)]
        prompt = _compress(TokenBudget(conversation=70), turns=turns)
        kept = prompt.messages[:-1]
        assert kept and kept[-1] == turns[-1] and turns[0] not in kept
        assert prompt.tokens["conversation"] <= 70

    def test_page_context_keeps_only_the_intents_fields(self) -> None:
        page = {"current_asin": "B0ABC", "store_section": "shonen", "browsing_history": ["B01", "B02"], "cart_asins": ["B03"]}
        prompt = _compress(TokenBudget(), page=page, page_fields=["cart_asins"])
        assert "cart_asins" in prompt.volatile_context and "browsing_history" not in prompt.volatile_context

    def test_user_message_is_capped_and_the_total_is_enforced(self) -> None:
        long_message = "Tell me about manga. " * 200
        chunks = [Chunk(f"Chunk {n}. " + "fact " * 60, score=1 - n / 10) for n in range(8)]
        budget = TokenBudget(system=60, retrieved=400, conversation=100, page=50, user=60, total=300)
        prompt = _compress(budget, message=long_message, chunks=chunks)
        assert prompt.tokens["user"] <= 60 + 4
        assert prompt.prompt_tokens <= 300
        assert prompt.raw_tokens > 1000 and prompt.ratio == round(prompt.prompt_tokens / prompt.raw_tokens, 4)

    def test_layout_is_stable_first(self) -> None:
        prompt = _compress(TokenBudget(), summary="Customer asked about Naruto.", chunks=[Chunk("Naruto facts.", 1)],
                           turns=[Message("user", "hi"), Message("assistant", "hello")])
        assert prompt.stable_context.startswith("Conversation so far")
        assert prompt.volatile_context.startswith("Store data")
        assert prompt.messages[-1] == Message("user", "Hello")


@pytest.mark.django_db(transaction=True)
class LiveBudgetTests:
    async def test_pm_budget_edit_in_the_admin_changes_the_next_answers_prompt(self, demo_catalog: None,
                                                                                 admin_client: Client) -> None:
        chat = await open_chat()
        before = (await chat.ask("Recommend a shonen manga like Dragon Ball", "b1"))[-1]["metrics"]["prompt_tokens"]

        budget = await sync_to_async(PromptBudget.objects.get)(active=True)
        response = await sync_to_async(admin_client.post)(f"/admin/chat/promptbudget/{budget.pk}/change/", {
            "name": "default", "active": "on", "system": 200, "retrieved": 80, "conversation": 200, "page": 100,
            "user": 100, "total": 2000})
        assert response.status_code == 302

        after = (await chat.ask("Recommend a seinen manga like Golgo 13", "b2"))[-1]["metrics"]
        await chat.ws.disconnect()
        assert after["prompt_tokens"] < before - 150, (before, after)
        assert after["prompt_tokens"] <= 200 + 80 + 200 + 100 + 100

    def test_budget_validation_refuses_sections_over_the_total(self, demo_catalog: None, admin_client: Client) -> None:
        budget = PromptBudget.objects.get(active=True)
        response = admin_client.post(f"/admin/chat/promptbudget/{budget.pk}/change/", {
            "name": "default", "active": "on", "system": 200, "retrieved": 350, "conversation": 200, "page": 100,
            "user": 100, "total": 500})
        assert response.status_code == 200 and "more than the total" in response.content.decode()
        response = admin_client.post(f"/admin/chat/promptbudget/{budget.pk}/change/", {
            "name": "default", "active": "on", "system": -5, "retrieved": 350, "conversation": 200, "page": 100,
            "user": 100, "total": 2000})
        assert response.status_code == 200
        assert PromptBudget.objects.get(pk=budget.pk).total == 2000


@pytest.mark.django_db(transaction=True)
class RollingSummaryTests:
    async def test_old_turns_fold_into_a_summary_that_keeps_titles_and_order_ids(self, demo_catalog: None) -> None:
        from chat.models import Conversation
        from mangaassist.celery import in_process_wait

        chat = await open_chat()
        await chat.ask("Where is my order MA-20481? I ordered it last week.", "r1")
        await chat.ask("Recommend a shonen manga like Dragon Ball", "r2")
        await chat.ask("Tell me more about the first one", "r3")
        frames = await chat.ask("Any promotions?", "r4")
        await chat.ws.disconnect()
        await saved_turns(8)
        await sync_to_async(in_process_wait)()
        conversation = await sync_to_async(Conversation.objects.get)(id=frames[0]["conversation"])
        assert conversation.summary_through == 4
        assert "MA-20481" in conversation.summary and "Dragon Ball" in conversation.summary
        assert "Presented" not in conversation.summary and "showed:" in conversation.summary

    async def test_summary_reaches_the_next_prompt(self, demo_catalog: None) -> None:
        from mangaassist.celery import in_process_wait

        chat = await open_chat()
        for n, text in enumerate(["Where is my order MA-20481?", "Recommend a seinen manga", "Is the first one finished?",
                                  "Any promotions?", "What about shipping costs?"]):
            await chat.ask(text, f"s{n}")
            await saved_turns(2 * (n + 1))
            await sync_to_async(in_process_wait)()
        completed = (await chat.ask("Has it shipped yet?", "s9"))[-1]
        await chat.ws.disconnect()
        assert completed["metrics"]["prompt_tokens"] > 0
        from chat.models import Conversation

        conversation = await sync_to_async(Conversation.objects.get)()
        assert "MA-20481" in conversation.summary
