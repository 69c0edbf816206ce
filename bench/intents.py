"""Intent classifier report: accuracy per intent and language on the held-out set, and latency.

    .venv/bin/python bench/intents.py
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mangaassist.settings")
    import django

    django.setup()
    from bench.common import percentile
    from chat.intents import classify, training_examples

    held_out = [json.loads(line) for line in (ROOT / "tests/data/intents_heldout.jsonl").open(encoding="utf-8")]
    started = time.perf_counter()
    classify("warm up")
    print(f"training on {len(training_examples())} examples: {time.perf_counter() - started:.2f} s")
    by_intent: dict[str, list[bool]] = defaultdict(list)
    by_lang: dict[str, list[bool]] = defaultdict(list)
    confusions: Counter = Counter()
    timings = []
    for example in held_out:
        started = time.perf_counter()
        predicted = classify(example["text"]).intent
        timings.append((time.perf_counter() - started) * 1000)
        ok = predicted == example["intent"]
        by_intent[example["intent"]].append(ok)
        by_lang[example["lang"]].append(ok)
        if not ok:
            confusions[(example["intent"], predicted)] += 1
    total = sum(sum(v) for v in by_intent.values()) / len(held_out)
    print(f"accuracy on {len(held_out)} held-out messages: {total:.1%}")
    for lang, oks in sorted(by_lang.items()):
        print(f"  {lang}: {sum(oks) / len(oks):.1%} ({len(oks)})")
    for intent, oks in sorted(by_intent.items()):
        print(f"  {intent:18} {sum(oks) / len(oks):.1%} ({len(oks)})")
    print("most common confusions (expected -> predicted):", confusions.most_common(5))
    print(f"classification latency p50 {percentile(timings, 50):.2f} ms, p95 {percentile(timings, 95):.2f} ms")


if __name__ == "__main__":
    main()
