"""Rolling conversation summaries: older turns folded into a few compact lines.

Extractive, so it needs no model and never invents: what the customer asked
(first sentence) and which products each answer presented. The request path
reads the stored summary; it never waits for this.
"""

from __future__ import annotations

import re

from .compression import count_tokens
from .entities import ORDER_ID_RE

MAX_SUMMARY_TOKENS = 110
_SENTENCE = re.compile(r"^(.+?[.!?。？！])(\s|$)")


def first_sentence(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    match = _SENTENCE.match(text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def summary_lines(turns: list[dict], titles_by_sku: dict[str, str]) -> list[str]:
    """One line per exchange: the question and the products the answer presented."""
    lines: list[str] = []
    for turn in turns:
        if turn["role"] == "user":
            intent = f" ({turn['intent']})" if turn.get("intent") else ""
            line = f"Customer{intent}: {first_sentence(turn['text'])}"
            # Order ids are facts later turns need ("has it shipped?"), wherever the customer wrote them.
            missing = [oid for oid in dict.fromkeys(m.upper() for m in ORDER_ID_RE.findall(turn["text"])) if oid not in line.upper()]
            if missing:
                line += f" [orders: {', '.join(missing)}]"
            lines.append(line)
        elif turn.get("product_skus"):
            shown = ", ".join(f"{titles_by_sku.get(s, s)} [{s}]" for s in turn["product_skus"][:5])
            lines.append(f"Assistant showed: {shown}")
        elif turn["text"]:
            lines.append(f"Assistant: {first_sentence(turn['text'], 80)}")
    return lines


def _priority(line: str) -> int:
    """Facts later turns need rank first: order ids, then what was presented or asked about."""
    if ORDER_ID_RE.search(line):
        return 3
    if line.startswith("Assistant showed") or line.startswith("Customer (product_question)"):
        return 2
    return 1


def summary_merge(previous: str, new_lines: list[str], *, max_tokens: int = MAX_SUMMARY_TOKENS) -> str:
    """Append the new lines; over the limit, drop the least important, oldest lines first.

    Order ids and presented products outlive pleasantries, whatever their age.
    """
    lines = [line for line in previous.splitlines() if line.strip()] + new_lines
    costs = [count_tokens(line) + 1 for line in lines]
    keep = [True] * len(lines)
    total = sum(costs)
    # Candidates to drop: lowest priority first, then oldest first.
    for index in sorted(range(len(lines)), key=lambda i: (_priority(lines[i]), i)):
        if total <= max_tokens:
            break
        keep[index] = False
        total -= costs[index]
    return "\n".join(line for line, kept in zip(lines, keep) if kept)


SUMMARY_INSTRUCTIONS = (
    "Condense these notes about a shopping conversation into at most {limit} tokens of plain lines. "
    "Keep every product title, every [SKU] and every order id exactly as written; drop pleasantries."
)


def summary_by_model(previous: str, new_lines: list[str], *, max_tokens: int = MAX_SUMMARY_TOKENS,
                     timeout: float = 10.0) -> str | None:
    """The configured model's summary, or None (no model, a failure, or a lost fact) for the extractive one."""
    import asyncio
    import re

    from django.conf import settings

    from .llm import get_backend
    from .llm.base import LLMError, LLMRequest, Message, Route, TextDelta

    if settings.LLM_BACKEND == "simulated":
        return None  # not a model: the extractive summary is the honest one
    notes = "\n".join([*previous.splitlines(), *new_lines])
    request = LLMRequest(system=SUMMARY_INSTRUCTIONS.format(limit=max_tokens), stable_context="", volatile_context="",
                         messages=[Message("user", notes)], max_tokens=max_tokens,
                         route=Route("summary", settings.BEDROCK_MODEL_ID if settings.LLM_BACKEND == "bedrock"
                                     else settings.OPENAI_MODEL or settings.LLM_BACKEND))

    async def collect() -> str:
        parts = []
        async for event in get_backend().stream(request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return "".join(parts).strip()

    try:
        text = asyncio.run(asyncio.wait_for(collect(), timeout))
    except (LLMError, asyncio.TimeoutError, OSError):
        return None
    must_keep = set(re.findall(r"\[[A-Z0-9]{10}\]|MA-\d{4,10}", notes))
    if not text or any(fact not in text for fact in must_keep) or count_tokens(text) > max_tokens * 1.2:
        return None  # the model dropped a fact or ran long: keep the extractive summary
    return text
