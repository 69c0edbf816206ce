"""Intent classification on the held-out labelled set (never used for training)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from chat.intents import INTENTS, classify, training_examples

HELD_OUT = Path(__file__).resolve().parent.parent / "data" / "intents_heldout.jsonl"


def _held_out() -> list[dict]:
    with HELD_OUT.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


class IntentClassifierTests:
    def test_held_out_set_is_large_bilingual_and_separate_from_training(self) -> None:
        held_out = _held_out()
        assert len(held_out) >= 200
        assert Counter(e["lang"] for e in held_out)["ja"] >= 50
        assert set(Counter(e["intent"] for e in held_out)) == set(INTENTS)
        training = {_norm(e["text"]) for e in training_examples()}
        assert not [e["text"] for e in held_out if _norm(e["text"]) in training]

    def test_accuracy_on_the_held_out_set_is_at_least_90_percent(self) -> None:
        held_out = _held_out()
        wrong = [(e["text"], e["intent"], classify(e["text"]).intent) for e in held_out
                 if classify(e["text"]).intent != e["intent"]]
        accuracy = 1 - len(wrong) / len(held_out)
        print(f"intent accuracy on {len(held_out)} held-out messages: {accuracy:.1%}")
        assert accuracy >= 0.90, wrong[:20]

    def test_a_follow_up_after_a_list_is_a_product_question(self) -> None:
        assert classify("what about the second one?", previous_intent="recommendation",
                        refers_to_previous=True).intent == "product_question"

    def test_compiled_model_gives_scikit_learns_probabilities(self) -> None:
        """The fast path (no per-call validation) computes the trained pipeline's own numbers."""
        from chat.intents import IntentModel, normalise

        pipeline, compiled = IntentModel.pipeline(), IntentModel.compiled()
        texts = [e["text"] for e in _held_out()] + ["", "   ", "zzzz qqqq", "!!!", "MA-0000123 どこ？", "a" * 2000]
        for text in texts:
            expected = dict(zip(map(str, pipeline.classes_), pipeline.predict_proba([normalise(text)])[0]))
            got = compiled.probabilities(normalise(text))
            assert got.keys() == expected.keys()
            assert max(abs(got[k] - expected[k]) for k in got) < 1e-9, text
