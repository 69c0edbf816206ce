"""Intent classification: which of DESIGN.md §7's nine intents a message carries.

A small trained model (TF-IDF over characters and words, logistic regression,
trained at start from the labelled examples in chat/data/) plus transparent
weighted patterns (English and Japanese), with the page and the previous turn as
tie-breakers. About a millisecond of CPU: no model call on the critical path.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


TRAINING_DIR = Path(__file__).resolve().parent / "data"
PATTERN_WEIGHT = 0.06  # one matched pattern (weight ~3) moves a probability by ~0.18


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def training_examples() -> list[dict[str, str]]:
    """Every labelled example in chat/data/intent_training*.jsonl."""
    examples: list[dict[str, str]] = []
    for path in sorted(TRAINING_DIR.glob("intent_training*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            examples += [json.loads(line) for line in handle if line.strip()]
    return examples


class IntentModel:
    """The trained half of the classifier: built once per process (about a second), then reused."""

    _lock = threading.Lock()
    _pipeline: Any = None

    @classmethod
    def ready(cls) -> bool:
        """Trained already: classifying costs about a millisecond (training costs seconds)."""
        return cls._pipeline is not None

    @classmethod
    def pipeline(cls) -> Any:
        if cls._pipeline is None:
            with cls._lock:
                if cls._pipeline is None:
                    cls._pipeline = cls._train(training_examples())
        return cls._pipeline

    @staticmethod
    def _train(examples: list[dict[str, str]]) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        features = make_union(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True),
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
        )
        pipeline = make_pipeline(features, LogisticRegression(C=10, max_iter=3000))
        pipeline.fit([normalise(e["text"]) for e in examples], [e["intent"] for e in examples])
        return pipeline

    _compiled: "CompiledModel | None" = None

    @classmethod
    def compiled(cls) -> "CompiledModel":
        if cls._compiled is None:
            pipeline = cls.pipeline()
            with cls._lock:
                if cls._compiled is None:
                    cls._compiled = CompiledModel(pipeline)
        return cls._compiled

    @classmethod
    def probabilities(cls, text: str) -> dict[str, float]:
        return cls.compiled().probabilities(normalise(text))


class CompiledModel:
    """The trained pipeline's arithmetic without scikit-learn's per-call checks.

    `predict_proba` on one message spends most of its ~1.5 ms validating input and dispatching
    the feature union through joblib; the same numbers (the tests compare them) take a few
    dozen microseconds from the fitted vocabularies, idf weights and coefficients.
    """

    def __init__(self, pipeline: Any) -> None:
        import numpy as np

        union, regression = pipeline.steps[0][1], pipeline.steps[-1][1]
        self.parts = []  # (analyzer, vocabulary, idf, sublinear, column offset) per vectorizer
        offset = 0
        for _, vectorizer in union.transformer_list:
            if vectorizer.norm != "l2" or not vectorizer.use_idf:
                raise ValueError("CompiledModel supports l2-normalised TF-IDF features only")
            self.parts.append((vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_,
                               vectorizer.sublinear_tf, offset))
            offset += len(vectorizer.vocabulary_)
        self.coef = np.ascontiguousarray(regression.coef_.T)  # features × classes
        self.intercept = regression.intercept_
        self.classes = [str(label) for label in regression.classes_]
        if len(self.classes) < 3 or self.coef.shape[1] != len(self.classes):
            raise ValueError("CompiledModel supports a multinomial logistic regression over 3+ classes")

    def probabilities(self, text: str) -> dict[str, float]:
        import math

        import numpy as np

        scores = self.intercept.copy()
        for analyzer, vocabulary, idf, sublinear, offset in self.parts:
            counts: dict[int, int] = {}
            for term in analyzer(text):
                column = vocabulary.get(term)
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
            if not counts:
                continue
            columns = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            weights = (1.0 + np.log(tf) if sublinear else tf) * idf[columns]
            weights /= math.sqrt(float(weights @ weights))
            scores += weights @ self.coef[columns + offset]
        scores = np.exp(scores - scores.max())
        scores /= scores.sum()
        return dict(zip(self.classes, map(float, scores)))


@dataclass(frozen=True)
class IntentResult:
    intent: str
    confidence: float
    scores: dict[str, float]


def pattern_scores(text: str) -> dict[str, float]:
    scores = {intent: 0.0 for intent in INTENTS}
    for intent, patterns in _COMPILED.items():
        for pattern, weight in patterns:
            if pattern.search(text):
                scores[intent] += weight
    return scores


def classify(text: str, *, previous_intent: str = "", on_product_page: bool = False,
             mentions_product: bool = False, refers_to_previous: bool = False) -> IntentResult:
    """The model's probabilities, nudged by the patterns, then by the page and the conversation."""
    patterns = pattern_scores(text)
    model = IntentModel.probabilities(text)
    scores = {intent: model.get(intent, 0.0) + PATTERN_WEIGHT * patterns[intent] for intent in INTENTS}
    if refers_to_previous and previous_intent in {"recommendation", "product_discovery", "product_question"}:
        # "the second one?" right after a list is almost always a question about that item.
        scores["product_question"] += 0.25
    if mentions_product:
        scores["product_question"] += 0.05
    if on_product_page:
        scores["product_question"] += 0.03
    best = max(INTENTS, key=lambda intent: scores[intent])
    return IntentResult(best, round(model.get(best, 0.0), 3), scores)
