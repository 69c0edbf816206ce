"""Prometheus metrics of the speculative prefetch (the worker side).

The chat side's `mangaassist_prefetch_lookups_total{result, transition}` lives in chat.metrics;
prefetch.services.prefetch_outcome_record increments it. These two are observed in the Celery
worker; with PROMETHEUS_MULTIPROC_DIR shared by web and worker processes (README), /metrics on a
web process reports them too.
"""

from prometheus_client import Counter, Histogram

PREFETCH_KEYS = Counter("mangaassist_prefetch_keys_total",
                        "Cache keys a speculative prefetch warmed, found warm already, or left at its deadline.",
                        ["kind", "result"])
PREFETCH_SECONDS = Histogram("mangaassist_prefetch_seconds", "Time one speculative prefetch took.",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                                      2.5, 3.0, 5.0))

SPECULATIONS = Counter(
    "mangaassist_speculations_total",
    "Speculative answers by outcome: when prepared (prepared, prewarmed, disabled, stale, unresolved, degraded, over_budget, "
    "truncated, failed, unsupported) and when the next turn came (served, discarded_*).",
    ["result"])
SPECULATIVE_TOKENS = Counter("mangaassist_speculative_tokens_total",
                             "Tokens spent preparing answers before they were asked (prompt and output).", ["kind"])
