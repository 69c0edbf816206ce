"""Masking of personal data in stored transcripts: emails, phone numbers, card-like numbers.

`mask_pii` is pure and cheap (a few regular expressions); it runs on every customer
message and every answer before they are saved, never on what the customer sees live.
What it keeps on purpose: order numbers (MA-12345), prices (¥1,440), dates, ISBN-13s and
tracking numbers, which the assistant needs to keep answering the conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
CARD_MASK = "[card number]"

# Patterns are ASCII-only (`\w`, `\d`): Japanese text right beside a number is a boundary.
# Matching runs on a copy of the text with full-width forms folded one-to-one to ASCII
# (０９０－１２３４ -> 090-1234, ＠ -> @), so offsets line up with the original text.
_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULLWIDTH.update({0x3000: 0x20, 0x2010: 0x2D, 0x2011: 0x2D, 0x2012: 0x2D, 0x2013: 0x2D, 0x2014: 0x2D,
                   0x2015: 0x2D, 0x2212: 0x2D, 0x30FC: 0x2D})  # ideographic space, dashes, minus, long vowel mark

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])")

# 13-19 digits, optionally grouped by single spaces or hyphens.
_CARD_RE = re.compile(r"(?<![\w\-.,])\d(?:[ \-]?\d){12,18}(?![\w\-])", re.ASCII)
# The printed layouts of card numbers (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4): masked whatever the checksum.
_CARD_LAYOUT_RE = re.compile(r"^\d{4}([ \-])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?$|^\d{4}([ \-])\d{6}\2\d{4,5}$")

_SEP = r"[ \-.]"
# (pattern, fewest digits, most digits): the digit count tells a phone number from a tracking number.
_PHONE_RES: tuple[tuple[re.Pattern[str], int, int], ...] = (
    # International: +81 90-1234-5678, +1 (415) 555-0123, +44 20 7946 0958.
    (re.compile(rf"(?<![\w+])\+\d{{1,3}}(?:{_SEP}?\(?\d{{1,5}}\)?){{2,5}}(?![\w])", re.ASCII), 8, 15),
    # Japanese domestic numbers start with 0: 090-1234-5678, 03-1234-5678, (03) 1234-5678, 0120-123-456.
    (re.compile(rf"(?<![\w\-])(?:\(0\d{{1,4}}\)\s?|0\d{{1,4}}{_SEP})\d{{1,4}}{_SEP}\d{{3,4}}(?![\w\-])", re.ASCII), 10, 11),
    (re.compile(r"(?<![\w\-])0[5789]0\d{8}(?![\w\-])", re.ASCII), 11, 11),  # mobile without separators: 09012345678
    # North American: (415) 555-0123, 415-555-0123, 415.555.0123.
    (re.compile(r"(?<![\w\-])(?:\(\d{3}\)\s?|\d{3}[\-.\s])\d{3}[\-.\s]\d{4}(?![\w\-])", re.ASCII), 10, 10),
)


def luhn_valid(digits: str) -> bool:
    """The checksum every payment card number carries (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _is_card(found: str) -> bool:
    digits = _digits(found)
    if len(digits) == 13 and digits[:3] in {"978", "979"}:
        return False  # an ISBN-13 ("9784088802646"): a book, not a card
    return bool(_CARD_LAYOUT_RE.match(found)) or luhn_valid(digits)


def _phone(fewest: int, most: int) -> Callable[[str], bool]:
    return lambda found: fewest <= len(_digits(found)) <= most


@dataclass(frozen=True)
class PiiMatch:
    start: int
    end: int
    kind: str  # "email", "card" or "phone"
    value: str  # as written in the text


_KINDS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("email", _EMAIL_RE, lambda found: True),
    ("card", _CARD_RE, _is_card),  # before phones: a card number also looks like a long phone number
    *(("phone", pattern, _phone(fewest, most)) for pattern, fewest, most in _PHONE_RES),
)
PLACEHOLDERS = {"email": EMAIL_MASK, "card": CARD_MASK, "phone": PHONE_MASK}


def pii_find(text: str) -> list[PiiMatch]:
    """The emails, card-like numbers and phone numbers in `text`, in order, never overlapping."""
    if not text:
        return []
    folded = text.translate(_FULLWIDTH)
    found: list[PiiMatch] = []
    for kind, pattern, accept in _KINDS:
        for match in pattern.finditer(folded):
            if accept(match.group()) and not any(m.start < match.end() and match.start() < m.end for m in found):
                found.append(PiiMatch(match.start(), match.end(), kind, text[match.start():match.end()]))
    return sorted(found, key=lambda m: m.start)


def pii_replace(text: str, matches: list[PiiMatch]) -> str:
    """`text` with each of `matches` (from `pii_find(text)`) replaced by its placeholder."""
    out: list[str] = []
    end = 0
    for match in matches:
        out.append(text[end:match.start])
        out.append(PLACEHOLDERS[match.kind])
        end = match.end
    out.append(text[end:])
    return "".join(out)


def mask_pii(text: str) -> str:
    """`text` with emails, phone numbers and payment-card numbers replaced by placeholders."""
    # A placeholder can expose a neighbour ("0000000000000+00000000" -> "[card number]+00000000"): repeat.
    # Every round replaces digits or an @ by placeholders that have neither, so the loop ends.
    while matches := pii_find(text):
        text = pii_replace(text, matches)
    return text
