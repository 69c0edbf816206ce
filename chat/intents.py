"""Intent classification: which of DESIGN.md §7's nine intents a message carries.

Transparent weighted patterns (English and Japanese) scored with the page and
the previous turn as tie-breakers. Pure CPU, microseconds: no model call on the
critical path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INTENTS = (
    "product_question", "recommendation", "product_discovery", "order_tracking",
    "return_request", "faq", "promotion", "checkout_help", "chitchat",
)

_PATTERNS: dict[str, list[tuple[str, float]]] = {
    "order_tracking": [
        (r"\b(track|tracking)\b", 3), (r"\bwhere('?s| is)? my (order|package|parcel|manga|books?)\b", 4),
        (r"\border\b.*\b(status|arrive|shipped|delivered|delivery)\b", 3), (r"\b(shipped|arrive|arriving|delivery date)\b", 1.5),
        (r"\bMA-?\d{4,}\b", 3), (r"\border (number|id|#)", 2.5), (r"注文|配送状況|届[かきくい]|追跡|発送|いつ届", 3),
    ],
    "return_request": [
        (r"\b(return|refund|exchange|send (it|them) back)\b", 3.5), (r"\b(damaged|defective|torn|wrong (item|book|volume))\b", 2.5),
        (r"返品|返金|交換|破損|不良品|間違[っえ]", 3.5),
    ],
    "checkout_help": [
        (r"\b(checkout|check out|my cart|basket|payment|pay with|credit card|paypal|place (an|my|the) order)\b", 3),
        (r"\b(add(ed)? (it|this|them)? ?to (my )?cart|remove from (my )?cart)\b", 3),
        (r"\bapply (a |the |my )?(code|coupon)\b", 2.5), (r"カート|支払|決済|購入手続|レジ", 3),
    ],
    "promotion": [
        (r"\b(sale|sales|discount|discounts|deal|deals|promo|promotion|promotions|coupon|offer|offers|% off)\b", 3),
        (r"\bon sale\b", 2), (r"セール|割引|キャンペーン|クーポン|お得", 3),
    ],
    "faq": [
        (r"\b(shipping (cost|fee|time|policy)|how long (does|is) (shipping|delivery)|ship (to|internationally|abroad))\b", 3.5),
        (r"\b(gift wrap|gift card|account|password|sign in|log ?in|membership|points|opening hours|contact)\b", 3),
        (r"\b(do you|can you|does the store) (ship|deliver|accept|offer)\b", 2.5), (r"\bpolicy\b", 2),
        (r"送料|配送料|会員|パスワード|ギフト|ポイント|営業時間|問い合わせ", 3),
    ],
    "recommendation": [
        (r"\b(recommend|recommendation|suggest|suggestion)s?\b", 3.5), (r"\b(similar to|like|if i liked|fans of)\b", 1.5),
        (r"\bwhat should i read\b", 3.5), (r"\b(something|anything) (like|similar)\b", 3), (r"おすすめ|オススメ|お勧め|似た|みたいな|ような", 3.5),
    ],
    "product_discovery": [
        (r"\b(looking for|search(ing)? for|find|show me|browse|list|any)\b", 1.5),
        (r"\b(trending|popular|best[- ]?sell(ing|ers?)|new releases?|top)\b", 2.5),
        (r"\b(shonen|shounen|seinen|shojo|shoujo|josei|kids|children)\b", 1.2),
        (r"\b(action|adventure|comedy|romance|horror|fantasy|sci-?fi|mystery|sports|thriller|historical|cooking)\b", 1.0),
        (r"探して|人気|ランキング|新刊|売れてる|ありますか", 2.5),
    ],
    "product_question": [
        (r"\b(how many volumes|volumes?|vol\.?\s*\d+|in stock|available|price|how much|cost|who (wrote|drew)|author|publisher)\b", 2.5),
        (r"\b(tell me (more )?about|what is|what's|is it|is this|does it|reviews?|rating|ending|finished|completed|ongoing)\b", 1.8),
        (r"\b(the (first|second|third|last) one|that one|this one)\b", 2.5),
        (r"何巻|在庫|値段|いくら|作者|著者|出版社|レビュー|評価|完結|それ|これ|詳しく|について", 2.5),
    ],
    "chitchat": [
        (r"^\s*(hi|hello|hey|yo|good (morning|evening|afternoon)|thanks?|thank you|bye|goodbye|ok|okay|cool|lol)\b", 3),
        (r"\b(who are you|what can you do|are you (a )?(bot|human|ai))\b", 3),
        (r"^\s*(こんにちは|こんばんは|おはよう|ありがとう|さようなら|よろしく)", 3),
    ],
}
_COMPILED = {intent: [(re.compile(p, re.IGNORECASE), w) for p, w in patterns] for intent, patterns in _PATTERNS.items()}


@dataclass(frozen=True)
class IntentResult:
    intent: str
    confidence: float
    scores: dict[str, float]


def classify(text: str, *, previous_intent: str = "", on_product_page: bool = False,
             mentions_product: bool = False, refers_to_previous: bool = False) -> IntentResult:
    """Score every intent; the page and the conversation break ties."""
    scores = {intent: 0.0 for intent in INTENTS}
    for intent, patterns in _COMPILED.items():
        for pattern, weight in patterns:
            if pattern.search(text):
                scores[intent] += weight
    if refers_to_previous:
        scores["product_question"] += 2.0
    if mentions_product:
        scores["product_question"] += 1.0
    if on_product_page:
        scores["product_question"] += 0.5
    if previous_intent in {"recommendation", "product_discovery"} and refers_to_previous:
        scores["product_question"] += 1.0
    best = max(INTENTS, key=lambda intent: scores[intent])
    total = sum(scores.values())
    if scores[best] <= 0:
        # Nothing matched: a bare title or a follow-up is still about products.
        fallback = "product_question" if (mentions_product or refers_to_previous) else "product_discovery" if len(text.split()) > 2 else "chitchat"
        return IntentResult(fallback, 0.3, scores)
    return IntentResult(best, round(scores[best] / total, 3), scores)
