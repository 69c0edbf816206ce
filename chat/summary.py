"""Rolling conversation summaries: older turns folded into a few compact lines.

Extractive, so it needs no model and never invents: what the customer asked
(first sentence) and which products each answer presented. The request path
reads the stored summary; it never waits for this.
"""

from __future__ import annotations

import re

from .compression import count_tokens

MAX_SUMMARY_TOKENS = 120
_SENTENCE = re.compile(r"^(.+?[.!?。？！])(\s|$)")


def _first_sentence(text: str, limit: int = 120) -> str:
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
            lines.append(f"Customer{intent}: {_first_sentence(turn['text'])}")
        elif turn.get("product_skus"):
            shown = ", ".join(f"{titles_by_sku.get(s, s)} [{s}]" for s in turn["product_skus"][:5])
            lines.append(f"Assistant showed: {shown}")
        elif turn["text"]:
            lines.append(f"Assistant: {_first_sentence(turn['text'], 80)}")
    return lines


def summary_merge(previous: str, new_lines: list[str], *, max_tokens: int = MAX_SUMMARY_TOKENS) -> str:
    """Append the new lines and keep the newest ones that fit the token limit."""
    lines = [line for line in previous.splitlines() if line.strip()] + new_lines
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = count_tokens(line) + 1
        if used + cost > max_tokens:
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))
