"""Text normalisation shared by the retrieval index and entity resolution.

Latin text is folded (NFKC, lower case, no diacritics: "Shōnen" -> "shonen");
Japanese runs are cut into character bigrams, the usual choice for lexical
search over text without spaces; katakana is folded to hiragana so that a
reading typed either way matches.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_CJK = r"\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u30fc"
_TOKEN_RE = re.compile(rf"[a-z0-9]+|[{_CJK}]+")
_CJK_RE = re.compile(rf"^[{_CJK}]+$")

STOPWORDS = frozenset(
    """a an and are as at be by do does for from have i in is it me my of on or
    please show tell that the this to what which with you your can could would
    some any about like manga series book books volume volumes want looking find
    recommend something similar give get one ones more""".split()
)


def fold(text: str) -> str:
    """NFKC, lower case, diacritics removed, katakana folded to hiragana.

    Plain ASCII is its own NFKC/NFD form, with no marks and no kana: lower case is all it needs."""
    return text.lower() if text.isascii() else _fold_unicode(text)


@lru_cache(maxsize=4096)
def _fold_unicode(text: str) -> str:
    """Cached: entity resolution folds the same Japanese and accented catalog titles for every message."""
    text = unicodedata.normalize("NFKC", text).lower()
    decomposed = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    text = unicodedata.normalize("NFC", text)
    return "".join(chr(ord(ch) - 0x60) if "\u30a1" <= ch <= "\u30f6" else ch for ch in text)


def tokens(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Search terms of `text`: Latin words, and bigrams (or a lone character) of Japanese runs."""
    out: list[str] = []
    for run in _TOKEN_RE.findall(fold(text)):
        if _CJK_RE.match(run):
            if len(run) == 1:
                out.append(run)
            else:
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif keep_stopwords or run not in STOPWORDS:
            out.append(run)
    return out


def compact(text: str) -> str:
    """Folded text with everything but letters and digits removed, for title matching."""
    return "".join(_TOKEN_RE.findall(fold(text)))


def script_runs(text: str) -> list[str]:
    """Folded Latin words and whole Japanese runs, unsplit ("NARUTO -ナルト-" -> naruto, なると)."""
    return _TOKEN_RE.findall(fold(text))


def search_document(*parts: str) -> str:
    """The product's search terms as one space-separated string: what PostgreSQL full-text
    search indexes ('simple' configuration), so Japanese is cut into the same bigrams as here."""
    return " ".join(tokens(" ".join(p for p in parts if p)))
