"""Prometheus metrics of the chat path (DESIGN.md §6 names, base units).

With PROMETHEUS_MULTIPROC_DIR set (scaled mode), every web and worker process writes them to that
directory and /metrics on any web process adds them all up (docs/observability.md).
"""

from prometheus_client import Counter, Histogram

# Dense between 50 ms and 2 s, where the targets and alarms sit.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                   0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0)
# The service's own steps (assembly, overhead) and inter-token gaps: milliseconds mostly, but still
# dense up to 2 s, past the 1 s longest source deadline (settings.ASSEMBLY_DEADLINES) and the 0.35 s alarm.
FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
TOKEN_BUCKETS = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 4000, 6000, 8000)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)

LLM_FIRST_TOKEN = Histogram("mangaassist_llm_first_token_seconds", "Time from the customer's message to the model's first token.",
                            ["backend", "route", "intent"], buckets=LATENCY_BUCKETS)
LLM_TOTAL = Histogram("mangaassist_llm_total_seconds", "Time from the customer's message to the whole answer.",
                      ["backend", "route", "intent"], buckets=LATENCY_BUCKETS)
LLM_INTER_TOKEN = Histogram("mangaassist_llm_inter_token_seconds", "Gap between two streamed deltas.",
                            ["backend"], buckets=FAST_BUCKETS)
ORCHESTRATOR_OVERHEAD = Histogram("mangaassist_orchestrator_overhead_seconds",
                                  "Time the service spends before calling the model (classification, assembly, compression).",
                                  ["intent"], buckets=FAST_BUCKETS)
CLIENT_FIRST_TOKEN = Histogram("mangaassist_client_first_token_seconds", "First-token time measured by the browser.",
                               buckets=LATENCY_BUCKETS)
CLIENT_TOTAL = Histogram("mangaassist_client_total_seconds", "Whole-answer time measured by the browser.",
                         buckets=LATENCY_BUCKETS)
PROMPT_TOKENS = Histogram("mangaassist_prompt_tokens", "Prompt tokens sent to the model (after compression).",
                          ["intent"], buckets=TOKEN_BUCKETS)
PROMPT_RAW_TOKENS = Histogram("mangaassist_prompt_raw_tokens", "Prompt tokens before compression.",
                              ["intent"], buckets=TOKEN_BUCKETS)
COMPRESSION_RATIO = Histogram("mangaassist_prompt_compression_ratio", "Compressed / raw prompt tokens.",
                              ["intent"], buckets=RATIO_BUCKETS)
CONTEXT_ASSEMBLY = Histogram("mangaassist_context_assembly_seconds", "Time to gather the context of a turn.",
                             ["intent"], buckets=FAST_BUCKETS)
CONTEXT_DEGRADED = Counter("mangaassist_context_degraded_total", "Context sources that timed out or failed.",
                           ["source", "reason"])
PREFETCH_LOOKUPS = Counter("mangaassist_prefetch_lookups_total", "Prefetch cache lookups on the chat path.",
                           ["result", "transition"])
OUTPUT_TOKENS = Counter("mangaassist_output_tokens_total", "Tokens streamed to customers.", ["backend", "route"])
TURNS = Counter("mangaassist_turns_total", "Answers by how they ended.", ["status", "intent"])
LLM_RETRIES = Counter("mangaassist_llm_retries_total", "Model calls retried before the first token.", ["backend", "reason"])
LLM_FALLBACKS = Counter("mangaassist_llm_fallbacks_total", "Answers moved to the fallback route.", ["from_route", "to_route"])
PROVIDER_CACHE = Counter("mangaassist_provider_cache_total", "Provider prompt-cache reads per call.", ["backend", "result"])
GUARDRAIL_FLAGS = Counter("mangaassist_guardrail_flags_total",
                          "Answers the guardrails changed before `completed`, by what they found.", ["code"])
TASKS_QUEUED = Counter("mangaassist_tasks_queued_total", "Background tasks queued from the web process.", ["task", "result"])
SOCKET_ERRORS = Counter("mangaassist_socket_errors_total", "Error frames sent to clients.", ["code"])
