"""Checks on the full answer before `completed` (DESIGN.md §3, step 6).

The model's deltas reach the customer as they come, before the whole answer exists:
the guard cannot unsay them. What it controls is the `completed` frame, whose text
the widget shows as the final answer in place of the streamed one, the product cards,
and the text that is saved (and so what later turns and the transcript remember).

`guard_answer` is pure and CPU-only (regular expressions over a few hundred words,
about a millisecond for a typical answer): it runs on the event loop between the last
delta and `completed`. What it enforces, whatever the model was told by a customer message or
by text planted in the catalog (prompt injection):

- the answer never repeats the system prompt (chat/prompts.py): a long verbatim
  span of it replaces the whole answer by a refusal;
- every product it presents exists: a **bold** or linked title, a [SKU] reference
  that is not in the catalog is removed (its list item, or its sentence). Bold that
  the turn's own data says (an author, a policy term, a name the customer typed) is
  emphasis, not an invented series; so is a name planted in a catalog description,
  which this check therefore lets through (its links, prices and contacts are caught);
- prices next to a product's title agree with the catalog (corrected otherwise);
- order numbers are this customer's (in the store data of this session, or typed by
  the customer); any other is masked, as are contact details the store data and the
  customer never gave (an email or a phone number planted in a description);
- no links to other sites, no images (the classic exfiltration and phishing channels).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

from catalog.selectors import ProductFacts
from catalog.text import compact

from .entities import ORDER_ID_RE
from .pii import pii_find, pii_replace
from .prompts import INTENT_GUIDANCE, SYSTEM_CORE

if TYPE_CHECKING:
    from catalog.retrieval import LexicalIndex

    from .assembly import AssembledContext

REFUSAL = ("Sorry, I can't share how I'm set up. I'm happy to help you find manga, check prices and stock, "
           "or look up your order.")
NOTHING_LEFT = ("I couldn't find that in our catalog. Could you tell me a title, an author or a genre you enjoy?")
ORDER_MASK = "MA-•••••"
LINK_REMOVED = "(link removed)"
EXAMPLE_ORDER_NUMBERS = frozenset({"MA-12345"})  # the format example the prompt and the responder give

# Consecutive words of the system prompt that make an answer a leak. The prompt's sentences are
# instructions, not phrases an answer about manga would share: ten words in a row are a quotation.
LEAK_WORDS = 10

_WORD_RE = re.compile(r"[0-9a-z]+")  # the prompt is English: its words are all a quotation can share
_BOLD_RE = re.compile(r"\*\*([^*\n]{1,200}?)\*\*|__([^_\n]{1,200}?)__")
_IMAGE_RE = re.compile(r"!\[[^\]\n]{0,300}\]\([^)\n]{0,2000}\)")
_LINK_RE = re.compile(r"(?<!!)\[([^\]\n]{1,300})\]\(\s*<?([^)\s>]{1,2000})>?(?:\s+\"[^\"\n]*\")?\s*\)")
_URL_RE = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]\"'`]+", re.IGNORECASE)
_SKU_REF_RE = re.compile(r"\s?\[(B0[0-9A-Z]{8})\]|(?<![0-9A-Za-z])(B0[0-9A-Z]{8})(?![0-9A-Za-z])")
_PRODUCT_PATH_RE = re.compile(r"^/products/([^/?#]+)/?")
_LIST_ITEM_RE = re.compile(r"^(\s*)(?:(\d{1,3})([.)])|[-*•])\s+")
_SENTENCE_RE = re.compile(r".*?(?:[.!?]+(?=\s|$)|[。！？]+|$)")  # within one line
_VOLUME_SUFFIX_RE = re.compile(r"[\s,:#-]*(?:vol(?:ume)?s?\.?\s*#?\d+(?:\s*-\s*\d+)?|第?\s*\d+\s*巻)\s*$", re.IGNORECASE)
_PARENTHETICAL_RE = re.compile(r"\s*[(（]([^)）]*)[)）]\s*$")
_PRICE_RE = re.compile(r"(?P<sign>[¥￥])\s?(?P<a>\d{1,3}(?:,\d{3})+|\d+)|(?P<b>\d{1,3}(?:,\d{3})+|\d+)\s?(?P<unit>円|yen\b)",
                       re.IGNORECASE)
_QUANTITY_RE = re.compile(r"(?:全\s*)?(\d{1,4})\s*(?:vols?\b\.?|volumes?\b|books?\b|copies\b|sets?\b|巻|冊)|[x×]\s?(\d{1,4})\b",
                          re.IGNORECASE)


@dataclass(frozen=True)
class GuardedAnswer:
    """The answer as the customer gets it in `completed` and as it is saved."""

    text: str
    products: list[ProductFacts]  # the catalog products it presents, in its order (the cards)
    flags: list[str] = field(default_factory=list)  # one per finding: "code" or "code:SKU"; never customer data

    @property
    def codes(self) -> set[str]:
        return {flag.split(":", 1)[0] for flag in self.flags}

    @property
    def changed(self) -> bool:
        return bool(self.flags)


def products_presented(text: str, candidates: list[ProductFacts]) -> list[ProductFacts]:
    """The candidates the answer names, in the order it names them."""
    folded = compact(text)
    positions: list[tuple[int, ProductFacts]] = []
    for product in candidates:
        spots = [folded.find(compact(t)) for t in (product.title_en, product.title_ja) if t and compact(t)]
        spots = [s for s in spots if s >= 0]
        if spots and product not in [p for _, p in positions]:
            positions.append((min(spots), product))
    positions.sort(key=lambda pair: pair[0])
    return [product for _, product in positions]


def guard_answer(text: str, context: AssembledContext, *, catalog: LexicalIndex | None = None) -> GuardedAnswer:
    """Check and correct the full answer before `completed`.

    `catalog` (the process's retrieval index) lets the answer name any catalog series, not only
    those assembled for this turn (a series from an earlier answer); without it, only the
    assembled ones count as known. The streamed deltas were shown already: the corrected text
    replaces them in the widget when `completed` arrives, and is what gets saved.
    """
    if leaks_system_prompt(text):
        return GuardedAnswer(REFUSAL, [], ["prompt_leak"])
    flags: list[str] = []
    known = _Known.of(context, catalog)
    guarded = _remove_images(text, flags)
    guarded = _check_links(guarded, known, flags)
    guarded = _check_sku_references(guarded, known, flags)
    guarded = _check_bold_titles(guarded, known, flags)
    guarded = _correct_prices(guarded, context, flags)
    guarded = _mask_foreign_orders(guarded, context, flags)
    guarded = _mask_foreign_contacts(guarded, context, flags)
    if not guarded.strip():
        guarded = NOTHING_LEFT
        flags.append("nothing_left")
    if not flags:
        guarded = text  # untouched, byte for byte
    return GuardedAnswer(guarded, products_presented(guarded, context.products), flags)


# --- system prompt leakage --------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _ngrams(words: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i:i + n]) for i in range(len(words) - n + 1))


_PROMPT_NGRAMS = frozenset(
    gram for section in (SYSTEM_CORE, *INTENT_GUIDANCE.values()) for gram in _ngrams(_words(section), LEAK_WORDS))


def leaks_system_prompt(text: str) -> bool:
    """Does `text` quote LEAK_WORDS or more consecutive words of the system prompt?"""
    return any(gram in _PROMPT_NGRAMS for gram in _ngrams(_words(text), LEAK_WORDS))


# --- what exists -------------------------------------------------------------------------------


_catalog_titles: tuple[weakref.ref, frozenset[str]] | None = None


def _titles_of(catalog: LexicalIndex) -> frozenset[str]:
    """Every catalog title, compacted; computed once per index (the index is rebuilt, never changed)."""
    global _catalog_titles
    cached = _catalog_titles
    if cached is not None and cached[0]() is catalog:
        return cached[1]
    titles = frozenset(title for titles in catalog.titles_compact for title in titles)
    _catalog_titles = (weakref.ref(catalog), titles)
    return titles


@dataclass
class _Known:
    titles: set[str]
    catalog_titles: frozenset[str]
    skus: set[str]
    catalog: LexicalIndex | None
    context: AssembledContext
    _grounding: str | None = None

    @classmethod
    def of(cls, context: AssembledContext, catalog: LexicalIndex | None) -> _Known:
        titles = {compact(p.title) for p in context.promotions if p.title}
        skus: set[str] = set(context.named_skus)
        for product in _facts_of(context):
            titles.update(compact(t) for t in (product.title, product.title_en, product.title_ja) if t)
            skus.add(product.sku)
        titles.discard("")
        return cls(titles, _titles_of(catalog) if catalog is not None else frozenset(), skus, catalog, context)

    def title(self, written: str) -> bool:
        """Is `written` (a bold span) a known series or promotion, maybe with a volume or its other title?"""
        candidates = [written]
        head = _VOLUME_SUFFIX_RE.sub("", written)
        candidates.append(head)
        parenthetical = _PARENTHETICAL_RE.search(head)
        if parenthetical:
            candidates += [head[:parenthetical.start()], parenthetical.group(1)]
        return any(self._title(compact(c)) for c in candidates if compact(c))

    def _title(self, folded: str) -> bool:
        return folded in self.titles or folded in self.catalog_titles

    def grounded(self, written: str) -> bool:
        """Does the data the answer was written from say `written`? (An author, a policy term, a name the
        customer typed: emphasis, not a series the model made up.)"""
        if self._grounding is None:
            self._grounding = compact(" ".join(_grounding_texts(self.context)))
        folded = compact(written)
        return len(folded) >= 3 and folded in self._grounding

    def sku(self, sku: str) -> bool:
        return sku in self.skus or (self.catalog is not None and sku in self.catalog.by_sku)


def _grounding_texts(context: AssembledContext) -> list[str]:
    texts = _conversation_texts(context)
    for product in _facts_of(context):
        texts += [*product.authors, product.publisher, product.demographic, *product.genres, product.status,
                  product.description]
    texts += [review.summary for review in context.reviews.values()]
    texts += [f"{p.title} {p.description}" for p in context.promotions]
    return texts


def _facts_of(context: AssembledContext) -> list[ProductFacts]:
    seen: dict[str, ProductFacts] = {}
    for product in [*context.products, context.focus, context.seed, *context.others]:
        if product is not None and product.sku not in seen:
            seen[product.sku] = product
    return list(seen.values())


def _invented(span: str, known: _Known) -> bool:
    """A bold span that presents a series neither the catalog nor the answer's data knows."""
    return _looks_like_title(span) and not known.title(span) and not known.grounded(span)


def _looks_like_title(span: str) -> bool:
    """Bold is also emphasis ("**not**", "**Note:**", "**¥480**"): only title-like spans are checked."""
    span = span.strip()
    if not span or not any(ch.isalpha() for ch in span):
        return False
    if span.endswith((":", "：")) or any(ch in span for ch in "¥￥%円"):
        return False
    if span[0].isascii() and span[0].islower():
        return False  # emphasis; a series whose title starts in lower case is in the catalog anyway
    return len(span.split()) <= 12


# --- removals ---------------------------------------------------------------------------------


def _remove_images(text: str, flags: list[str]) -> str:
    def drop(match: re.Match[str]) -> str:
        flags.append("image_removed")
        return ""

    return _IMAGE_RE.sub(drop, text)


def _store_path(url: str) -> str | None:
    """The path of `url` when it points into the store (relative, or one of the store's own hosts)."""
    from django.conf import settings
    from django.http.request import validate_host

    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        # A browser reads "/\evil.example" like "//evil.example": another site.
        return parts.path if url.startswith("/") and not url.startswith(("//", "/\\")) else None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    hosts = [h for h in settings.ALLOWED_HOSTS if h != "*"]
    hosts += [urlsplit(origin).hostname or "" for origin in settings.CHAT_ALLOWED_ORIGINS]
    return parts.path or "/" if validate_host(parts.hostname, [h for h in hosts if h]) else None


def _check_links(text: str, known: _Known, flags: list[str]) -> str:
    def link(match: re.Match[str]) -> str:
        label, url = match.group(1), match.group(2)
        path = _store_path(url)
        if path is None:
            flags.append("external_link")
            return label
        product = _PRODUCT_PATH_RE.match(path)
        if product and not known.sku(product.group(1)):
            flags.append("unknown_sku")
            return f"**{label}**"  # the title check below keeps it if the series exists under another SKU
        return match.group()

    def bare(match: re.Match[str]) -> str:
        url = match.group().rstrip(".,;:!?")
        trailing = match.group()[len(url):]
        if _store_path(url if "://" in url else "http://" + url) is not None:
            return match.group()
        flags.append("external_link")
        return LINK_REMOVED + trailing

    text = _LINK_RE.sub(link, text)
    # Bare URLs outside the markdown links that stayed (those point into the store).
    kept = [(m.start(), m.end()) for m in _LINK_RE.finditer(text)]
    out, end = [], 0
    for match in _URL_RE.finditer(text):
        if any(start <= match.start() < stop for start, stop in kept):
            continue
        out += [text[end:match.start()], bare(match)]
        end = match.end()
    return "".join(out) + text[end:] if out else text


def _check_sku_references(text: str, known: _Known, flags: list[str]) -> str:
    def reference(match: re.Match[str]) -> str:
        sku = match.group(1) or match.group(2)
        if known.sku(sku):
            return match.group()
        flags.append("unknown_sku")
        return ""

    return _SKU_REF_RE.sub(reference, text)


def _check_bold_titles(text: str, known: _Known, flags: list[str]) -> str:
    """Drop the list item, or else the sentence, that presents a series the catalog does not have."""
    lines = text.split("\n")
    kept_lines: list[str] = []
    changed = False
    for line in lines:
        unknown = [m.span() for m in _BOLD_RE.finditer(line) if _invented(m.group(1) or m.group(2), known)]
        if not unknown:
            kept_lines.append(line)
            continue
        changed = True
        flags.extend("unknown_product" for _ in unknown)
        if _LIST_ITEM_RE.match(line):
            continue
        line = _without_sentences_at(line, unknown).strip()
        if line:
            kept_lines.append(line)
    if not changed:
        return text
    return _renumber("\n".join(kept_lines)).strip("\n")


def _without_sentences_at(line: str, spans: list[tuple[int, int]]) -> str:
    """`line` without the sentences that overlap `spans` (a "." in a title or a link does not end a sentence)."""
    shielded = line
    for pattern in (_BOLD_RE, _LINK_RE, _URL_RE):
        for match in pattern.finditer(shielded):
            start, end = match.span()
            shielded = shielded[:start] + "x" * (end - start) + shielded[end:]
    kept: list[str] = []
    for sentence in _SENTENCE_RE.finditer(shielded):
        start, end = sentence.span()
        if start == end:
            continue
        if not any(s < end and start < e for s, e in spans):
            kept.append(line[start:end])
    return "".join(kept)


def _renumber(text: str) -> str:
    """Numbered list items numbered 1, 2, 3... again after an item was dropped."""
    out: list[str] = []
    number = 0
    for line in text.split("\n"):
        match = _LIST_ITEM_RE.match(line)
        if match and match.group(2):
            number += 1
            line = f"{match.group(1)}{number}{match.group(3)}" + line[match.end(3):]
        elif line.strip():
            number = 0 if not match else number
        out.append(line)
    # Collapse the blank lines a removed block leaves behind.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


# --- prices -----------------------------------------------------------------------------------


def _amount(match: re.Match[str]) -> int:
    return int((match.group("a") or match.group("b")).replace(",", ""))


def _amounts_in(texts: Iterable[str]) -> set[int]:
    return {_amount(m) for text in texts for m in _PRICE_RE.finditer(text)}


def _title_spots(text: str, products: list[ProductFacts]) -> list[tuple[int, int, ProductFacts]]:
    """Where the answer presents each product, longest title first where two overlap.

    When the answer writes titles in bold (as the prompt asks), only bold titles start a
    product's stretch of text: a series a description mentions in passing does not.
    """
    bold = [m.span() for m in _BOLD_RE.finditer(text)]
    spots: list[tuple[int, int, ProductFacts]] = []
    for product in products:
        for title in {t for t in (product.title, product.title_en, product.title_ja) if t and t.strip()}:
            for match in re.finditer(re.escape(title), text, re.IGNORECASE):
                spots.append((match.start(), match.end(), product))
    in_bold = [s for s in spots if any(start <= s[0] and s[1] <= end for start, end in bold)]
    spots = in_bold or spots
    spots.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    chosen: list[tuple[int, int, ProductFacts]] = []
    for spot in spots:
        if not chosen or spot[0] >= chosen[-1][1]:
            chosen.append(spot)
    return chosen


def _allowed_prices(product: ProductFacts, segment: str, context: AssembledContext, quoted: set[int]) -> set[int]:
    """The catalog price, totals for the volume counts the segment names, and promotion prices."""
    counts = {1} | {int(m.group(1) or m.group(2)) for m in _QUANTITY_RE.finditer(segment)}
    totals = {product.price_yen * n for n in counts if n > 0}
    discounted = set()
    for promotion in context.promotions:
        if promotion.applies_to(product):
            for total in totals:
                exact = total * (100 - promotion.discount_percent) / 100
                discounted |= {int(exact), int(exact) + (exact % 1 > 0), round(exact)}
    return totals | discounted | quoted


def _correct_prices(text: str, context: AssembledContext, flags: list[str]) -> str:
    products = _facts_of(context)
    if not products or not _PRICE_RE.search(text):
        return text
    quoted = _amounts_in([*context.store.values(), *(f"{p.title} {p.description}" for p in context.promotions)])
    spots = _title_spots(text, products)
    replacements: list[tuple[int, int, str]] = []
    for n, (_, title_end, product) in enumerate(spots):
        stop = spots[n + 1][0] if n + 1 < len(spots) else len(text)
        newline = text.find("\n", title_end)
        stop = min(stop, newline) if newline >= 0 else stop
        segment = text[title_end:stop]
        allowed = _allowed_prices(product, segment, context, quoted)
        for match in _PRICE_RE.finditer(segment):
            if _amount(match) in allowed:
                continue
            written = match.group("a") or match.group("b")
            number = f"{product.price_yen:,}" if "," in written or product.price_yen >= 10_000 else str(product.price_yen)
            start = title_end + match.start("a" if match.group("a") else "b")
            replacements.append((start, start + len(written), number))
            flags.append(f"price_corrected:{product.sku}")
    for start, end, number in reversed(replacements):
        text = text[:start] + number + text[end:]
    return text


# --- other customers' data --------------------------------------------------------------------


def _conversation_texts(context: AssembledContext) -> list[str]:
    """What this customer has been shown or has said: the store data of their session and their messages."""
    memory = context.memory
    return [context.message, memory.summary, *(m.text for m in memory.recent), *context.store.values()]


def _mask_foreign_orders(text: str, context: AssembledContext, flags: list[str]) -> str:
    if not ORDER_ID_RE.search(text):
        return text
    own = {f"MA-{digits}" for t in _conversation_texts(context) for digits in ORDER_ID_RE.findall(t)}
    own |= EXAMPLE_ORDER_NUMBERS

    def order(match: re.Match[str]) -> str:
        if f"MA-{match.group(1)}" in own:
            return match.group()
        flags.append("order_number_masked")
        return ORDER_MASK

    return ORDER_ID_RE.sub(order, text)


def _contact_key(kind: str, value: str) -> str:
    return value.lower() if kind == "email" else "".join(str(int(ch)) for ch in value if ch.isdecimal())


def _mask_foreign_contacts(text: str, context: AssembledContext, flags: list[str]) -> str:
    """Emails and phone numbers neither the store data nor the customer gave; card numbers always."""
    found = pii_find(text)
    if not found:
        return text
    own = {_contact_key(m.kind, m.value) for t in _conversation_texts(context) for m in pii_find(t)}
    masked = [m for m in found if m.kind == "card" or _contact_key(m.kind, m.value) not in own]
    flags.extend(f"{m.kind}_masked" for m in masked)
    return pii_replace(text, masked) if masked else text
