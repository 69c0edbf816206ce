"""Rolling conversation summaries: older turns folded into a few compact lines.

Extractive, so it needs no model and never invents: what the customer asked
(first sentence) and which products each answer presented. The request path
reads the stored summary; it never waits for this.
"""

from __future__ import annotations

import re

from .compression import count_tokens
from .entities import order_ids

MAX_SUMMARY_TOKENS = 110
_SENTENCE = re.compile(r"^(.+?[.!?。？！])(\s|$)")


def first_sentence(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    match = _SENTENCE.match(text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


ORDERS_PREFIX = "Orders mentioned: "
SERIES_PREFIX = "Series discussed: "
MAX_SERIES = 6
MAX_ORDERS = 4


def summary_lines(turns: list[dict], titles_by_sku: dict[str, str]) -> list[str]:
    """The facts of `turns` (orders, series asked about) then one line per message."""
    lines: list[str] = []
    orders: list[str] = []
    series: list[str] = []
    for turn in turns:
        skus = turn.get("product_skus") or []
        if turn["role"] == "user":
            intent = f" ({turn['intent']})" if turn.get("intent") else ""
            lines.append(f"Customer{intent}: {first_sentence(turn['text'])}")
            orders += order_ids(turn["text"])
            series += skus  # the series the customer named or pointed at
        elif len(skus) == 1:
            series += skus  # an answer about one series
            lines.append(f"Assistant answered about {titles_by_sku.get(skus[0], skus[0])} [{skus[0]}]")
        elif skus:
            shown = ", ".join(f"{titles_by_sku.get(s, s)} [{s}]" for s in skus[:5])
            lines.append(f"Assistant showed: {shown}")
        elif turn["text"]:
            lines.append(f"Assistant: {first_sentence(turn['text'], 80)}")
    facts = []
    if orders:
        facts.append(ORDERS_PREFIX + ", ".join(dict.fromkeys(orders)))
    if series:
        facts.append(SERIES_PREFIX + "; ".join(f"{titles_by_sku.get(s, s)} [{s}]" for s in dict.fromkeys(series)))
    return facts + lines


def _merged_facts(prefix: str, lines: list[str], separator: str, keep: int) -> str | None:
    """One fact line from every line with `prefix`, newest items last, at most `keep` of them."""
    items: list[str] = []
    for line in lines:
        if line.startswith(prefix):
            for item in line[len(prefix):].split(separator):
                item = item.strip()
                if item:
                    if item in items:
                        items.remove(item)
                    items.append(item)
    return prefix + separator.join(items[-keep:]) if items else None


def _priority(line: str, newest_list: bool) -> int:
    """Which narrative lines outlive the others: the latest list shown, then what was presented or asked."""
    if newest_list:
        return 3
    if line.startswith("Assistant showed") or line.startswith("Customer (product_question)"):
        return 2
    return 1


def summary_merge(previous: str, new_lines: list[str], *, max_tokens: int = MAX_SUMMARY_TOKENS) -> str:
    """Fold new lines into the summary: fact lines (orders, series) always kept and deduplicated,
    narrative lines dropped least important and oldest first when over the limit."""
    lines = [line for line in previous.splitlines() if line.strip()] + new_lines
    facts = [fact for fact in (_merged_facts(ORDERS_PREFIX, lines, ", ", MAX_ORDERS),
                               _merged_facts(SERIES_PREFIX, lines, "; ", MAX_SERIES)) if fact]
    narrative = [line for line in lines if not line.startswith((ORDERS_PREFIX, SERIES_PREFIX))]
    newest_list = max((i for i, line in enumerate(narrative) if line.startswith("Assistant showed")), default=-1)
    costs = [count_tokens(line) + 1 for line in narrative]
    keep = [True] * len(narrative)
    total = sum(costs) + sum(count_tokens(f) + 1 for f in facts)
    for index in sorted(range(len(narrative)), key=lambda i: (_priority(narrative[i], i == newest_list), i)):
        if total <= max_tokens:
            break
        keep[index] = False
        total -= costs[index]
    return "\n".join(facts + [line for line, kept in zip(narrative, keep) if kept])


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
