"""Entity resolution: which products, orders and volumes a message is about.

Titles (English, Japanese, partial, misspelled) are matched against the catalog
index; references to earlier turns ("the first one", "that one", "それ") against
the products shown in the previous answers.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache

from catalog.retrieval import LexicalIndex, ScoredProduct
from catalog.text import compact, script_runs, tokens

# Not \b: in "MA-26641の荷物" the kana is a word character too.
ORDER_ID_RE = re.compile(r"(?<![A-Za-z0-9])MA[-\s]?(\d{4,10})(?!\d)", re.IGNORECASE)
VOLUME_RE = re.compile(r"\bvol(?:ume)?\.?\s*#?(\d{1,3})\b|(\d{1,3})\s*巻|第\s*(\d{1,3})\s*巻", re.IGNORECASE)

_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "5th": 4,
}
_ORDINAL_RE = re.compile(r"\b(?:the\s+)?(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last)\b(?:\s+(?:one|series|title|manga|book|pick|option|suggestion))?", re.IGNORECASE)
_JA_ORDINAL_RE = re.compile(r"(最初|一番目|1番目|1つ目|一つ目|二番目|2番目|2つ目|二つ目|三番目|3番目|3つ目|三つ目|最後)")
_JA_ORDINALS = {"最初": 0, "一番目": 0, "1番目": 0, "1つ目": 0, "一つ目": 0, "二番目": 1, "2番目": 1, "2つ目": 1,
                "二つ目": 1, "三番目": 2, "3番目": 2, "3つ目": 2, "三つ目": 2, "最後": -1}
_ANAPHOR_RE = re.compile(r"\b(that one|this one|that series|this series|that manga|this manga|it|its|them)\b|それ|その|これ|この作品", re.IGNORECASE)


@dataclass
class Entities:
    product_ids: list[int] = field(default_factory=list)  # named in the message, best first
    referenced_ids: list[int] = field(default_factory=list)  # resolved from earlier answers
    order_ids: list[str] = field(default_factory=list)
    volume: int | None = None

    @property
    def focus_ids(self) -> list[int]:
        """The products the message is about: references first, then names."""
        seen: list[int] = []
        for pid in self.referenced_ids + self.product_ids:
            if pid not in seen:
                seen.append(pid)
        return seen


def _title_matches(text: str, index: LexicalIndex, limit: int = 3,
                   retrieved: list[ScoredProduct] | None = None) -> list[int]:
    """Products whose title the message names, exactly, partly or misspelled.

    `retrieved` (the assembly's own retrieval of this message) spares a second search."""
    message = compact(text)
    if not message:
        return []
    words = tokens(text)
    lexical = {c.product_id: c.score for c in (retrieved if retrieved is not None else index.search(text, limit=8))}
    positions = [index.by_id[pid] for pid in lexical]
    positions += [p for p in index.title_candidates(text) if p not in positions]
    matched: list[tuple[float, int]] = []
    windows: dict[int, list[str]] = {}
    for position in positions:
        best = 0.0
        for original, title in zip(index.items[position].titles, index.titles_compact[position]):
            if len(title) < 2:
                continue
            if title in message:
                best = max(best, 1.0 + len(title) / 100)
                continue
            # Partial: a distinctive part of the title ("kimetsu", "conan", the ナルト of "NARUTO -ナルト-").
            for part in script_runs(original):
                cjk = not part.isascii()
                long_enough = len(part) >= 3 if cjk else (len(part) >= 6 or 2 * len(part) >= len(title)) and len(part) >= 4
                if long_enough and part != title and (part in message if cjk else part in words):
                    best = max(best, 0.75 + len(part) / 200)
        if best == 0.0:
            best = _fuzzy_score(words, index.items[position].titles, windows)
        product_id = index.items[position].product_id
        if best >= FUZZY_MIN:
            matched.append((best + lexical.get(product_id, 0.0) / 1000, product_id))
    matched.sort(reverse=True)
    return [pid for _, pid in matched[:limit]]


FUZZY_MIN = 0.72  # a misspelled title counts from this similarity on


def _fuzzy_score(words: list[str], titles: tuple[str, ...], windows: dict[int, list[str]] | None = None) -> float:
    """How well some run of the message's words spells a title (misspellings); 0 below FUZZY_MIN.

    difflib's cheap upper bounds skip the windows that cannot beat the best so far (or the minimum).
    `windows`: the message's runs of words by length, shared by the titles of one message.
    """
    best = 0.0
    matcher = difflib.SequenceMatcher(None)
    windows = {} if windows is None else windows
    for title in titles:
        target, n_words = _title_shape(title)
        if len(target) < 5:
            continue
        matcher.set_seq2(target)
        for size in {n_words - 1, n_words, n_words + 1} - {0}:
            if size not in windows:
                windows[size] = ["".join(words[start : start + size])
                                 for start in range(0, max(1, len(words) - size + 1))]
            for window in windows[size]:
                if abs(len(window) - len(target)) > max(3, len(target) // 4):
                    continue
                matcher.set_seq1(window)
                floor = max(best, FUZZY_MIN)
                if matcher.real_quick_ratio() >= floor and matcher.quick_ratio() >= floor:
                    best = max(best, matcher.ratio())
    return best if best >= FUZZY_MIN else 0.0


@lru_cache(maxsize=65536)
def _title_shape(title: str) -> tuple[str, int]:
    """A catalog title as the fuzzy match compares it: compacted, and its number of words."""
    return compact(title), max(1, len(tokens(title)))


def _references(text: str, shown: list[list[int]], focus_id: int | None = None) -> list[int]:
    """Products of earlier turns the message points at; `shown` is newest answer first."""
    latest = next((ids for ids in shown if ids), [])
    if focus_id is not None:
        latest = [focus_id]  # "it" is what the conversation was last about
        shown = shown or [[focus_id]]
    if not latest:
        return []
    # "The second one" counts within the last list shown, even after a follow-up about one of its items;
    # "it" is what the last answer was about.
    last_list = next((ids for ids in shown if len(ids) > 1), latest)
    picked: list[int] = []
    for match in _ORDINAL_RE.finditer(text):
        word = match.group(1).lower()
        position = -1 if word == "last" else _ORDINALS[word]
        if -len(last_list) <= position < len(last_list):
            picked.append(last_list[position])
    for match in _JA_ORDINAL_RE.finditer(text):
        position = _JA_ORDINALS[match.group(1)]
        if -len(last_list) <= position < len(last_list):
            picked.append(last_list[position])
    if not picked and _ANAPHOR_RE.search(text):
        picked.append(latest[0])
    return picked


def resolve(text: str, *, index: LexicalIndex, shown: list[list[int]], current_product_id: int | None = None,
            focus_id: int | None = None, retrieved: list[ScoredProduct] | None = None) -> Entities:
    entities = Entities()
    entities.order_ids = order_ids(text)
    volume = VOLUME_RE.search(text)
    if volume:
        entities.volume = int(next(g for g in volume.groups() if g))
    entities.referenced_ids = _references(text, shown, focus_id)
    entities.product_ids = _title_matches(text, index, retrieved=retrieved)
    if not entities.focus_ids and current_product_id and _ANAPHOR_RE.search(text):
        entities.referenced_ids = [current_product_id]
    return entities


def order_ids(text: str) -> list[str]:
    """Order numbers in `text`, normalised ("ma 40021" -> "MA-40021")."""
    return list(dict.fromkeys(f"MA-{digits}" for digits in ORDER_ID_RE.findall(text)))


def refers_to_earlier_turns(text: str) -> bool:
    """Cheap check, before memory arrives: does the message point at an earlier answer?"""
    return bool(_ORDINAL_RE.search(text) or _JA_ORDINAL_RE.search(text) or _ANAPHOR_RE.search(text))
