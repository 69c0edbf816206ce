"""MangaAssist settings: one module, every operator-facing value from the environment.

Two modes, chosen by the environment alone (DESIGN.md §2):
- embedded (nothing set): SQLite, in-memory channel layer, local-memory cache,
  Celery tasks run in-process on a thread pool;
- scaled (`REDIS_URL` and/or `DATABASE_URL`): PostgreSQL, channels-redis, Redis
  cache and Celery broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {value}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", False)
# The production profile (`DJANGO_PRODUCTION=true`) turns on HTTPS-only cookies,
# HSTS and the SSL redirect, and refuses to start without a real secret key.
PRODUCTION = env_bool("DJANGO_PRODUCTION", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
    # Development only: a fixed, clearly marked key so sessions survive restarts.
    SECRET_KEY = "django-insecure-mangaassist-development-key-do-not-use-in-production"

HOST = env_str("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000, minimum=1)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
# Origins (scheme://host[:port]) whose pages may open the chat socket, beyond the
# store's own hosts. Store pages on other domains that embed the widget go here.
CHAT_ALLOWED_ORIGINS = env_list("CHAT_ALLOWED_ORIGINS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_prometheus",
    "django_celery_beat",
    "catalog",
    "store",
    "chat",
    "prefetch",
    "throughput",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "mangaassist.urls"
ASGI_APPLICATION = "mangaassist.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores: embedded or scaled ------------------------------------------

REDIS_URL = env_str("REDIS_URL")
DATABASE_URL = env_str("DATABASE_URL")
SCALED_MODE = bool(REDIS_URL or DATABASE_URL)

if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                # WAL lets readers run beside the single writer; IMMEDIATE makes a
                # writer wait for the lock up front instead of failing mid-transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Kept open per thread, as PostgreSQL's are: opening one (with its PRAGMAs and functions)
            # for every ORM call was the biggest CPU cost of a turn under load.
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            # A file, not shared-cache memory: tests then lock like production does.
            # One per test process, so parallel runs never share (or delete) each other's database.
            "TEST": {"NAME": env_str("SQLITE_TEST_PATH", str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's default 5 s socket timeout equals channels-redis's 5 s blocking pop:
            # idle sockets would die with "Timeout reading". Reads get comfortably longer.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 2}]},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "mangaassist",
            "TIMEOUT": 300,
            "OPTIONS": {
                # A cache that does not answer quickly is treated as a miss
                # (see chat.cachekeys): chat must never wait on it.
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "mangaassist",
            "TIMEOUT": 300,
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 60 * 60 * 24 * 30, minimum=60)

# --- Celery ---------------------------------------------------------------------

# Embedded mode runs tasks in-process on a small thread pool (mangaassist.tasking):
# no broker, and never on the event loop.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASKS_IN_PROCESS = env_bool("CELERY_TASKS_IN_PROCESS", not CELERY_BROKER_URL)
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "Asia/Tokyo"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "mangaassist"
# Pre-generation calls the model (a second or more); on its own queue it never holds up the
# millisecond prefetches, and operators can give it workers of its own.
SPECULATION_QUEUE = "mangaassist.speculation"
CELERY_TASK_ROUTES = {"prefetch.speculate": {"queue": SPECULATION_QUEUE}}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing must fail fast when the broker is down: the chat never waits on it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 0, "socket_connect_timeout": 0.5, "socket_timeout": 1.0}
CELERY_TASK_PUBLISH_RETRY = False
CELERY_TASK_EXPIRES_SECONDS = env_int("CELERY_TASK_EXPIRES_SECONDS", 60, minimum=1)

# --- Static files, i18n ------------------------------------------------------------

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Tokyo"
USE_I18N = True
USE_TZ = True

# --- Security ------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # At DEBUG these log signed requests (AWS session tokens) and API keys: never below INFO.
        **{name: {"level": "INFO"} for name in ("botocore", "boto3", "urllib3", "httpx", "httpcore")},
    },
}

# --- Chat: the model ---------------------------------------------------------------------

LLM_BACKEND = env_str("LLM_BACKEND", "simulated")
if LLM_BACKEND not in {"simulated", "bedrock", "openai", "local"}:
    raise ImproperlyConfigured(
        f"LLM_BACKEND must be one of simulated, bedrock, openai, local; not {LLM_BACKEND!r}"
    )
LLM_SIMULATED_PROFILE = env_str("LLM_SIMULATED_PROFILE", "bedrock")
if LLM_SIMULATED_PROFILE not in {"bedrock", "instant"}:
    raise ImproperlyConfigured(
        f"LLM_SIMULATED_PROFILE must be bedrock or instant, not {LLM_SIMULATED_PROFILE!r}"
    )
# Simulated Bedrock-like pace (defaults near published Claude 3.5 Haiku/Sonnet
# latency-optimized figures): time to first token = base + per prompt token, then
# one output token every decode interval; each draw gets +/- jitter.
LLM_SIM_PREFILL_BASE_MS = env_float("LLM_SIM_PREFILL_BASE_MS", 180.0, minimum=0)
LLM_SIM_PREFILL_PER_TOKEN_MS = env_float("LLM_SIM_PREFILL_PER_TOKEN_MS", 0.08, minimum=0)
LLM_SIM_DECODE_MS_PER_TOKEN = env_float("LLM_SIM_DECODE_MS_PER_TOKEN", 5.0, minimum=0)
LLM_SIM_JITTER = env_float("LLM_SIM_JITTER", 0.15, minimum=0)
# Injected faults for load tests, per call: e.g. "throttle:0.05,stream_error:0.01,stall:0.01,cut:0.01".
LLM_SIM_FAULTS = env_str("LLM_SIM_FAULTS")

BEDROCK_MODEL_ID = env_str("BEDROCK_MODEL_ID", "anthropic.claude-3-5-sonnet-20241022-v2:0")
AWS_REGION = env_str("AWS_REGION", "us-east-1")
BEDROCK_ENDPOINT_URL = env_str("BEDROCK_ENDPOINT_URL") or None
BEDROCK_CONTROL_ENDPOINT_URL = env_str("BEDROCK_CONTROL_ENDPOINT_URL") or None
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL") or None
OPENAI_MODEL = env_str("OPENAI_MODEL") or None

LLM_MAX_OUTPUT_TOKENS = env_int("LLM_MAX_OUTPUT_TOKENS", 400, minimum=16)
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", 0.3, minimum=0)
# Where an answer goes when the primary route fails before its first token (empty: nowhere).
LLM_FALLBACK_MODEL_ID = env_str("LLM_FALLBACK_MODEL_ID")

# Bedrock specifics: `converse` (ConverseStream) or `invoke` (InvokeModelWithResponseStream).
BEDROCK_API = env_str("BEDROCK_API", "converse")
if BEDROCK_API not in {"converse", "invoke"}:
    raise ImproperlyConfigured(f"BEDROCK_API must be converse or invoke, not {BEDROCK_API!r}")
BEDROCK_PROMPT_CACHE = env_bool("BEDROCK_PROMPT_CACHE", True)
# `auto`: latency-optimized inference for the models that offer it; `true` / `false` to force.
BEDROCK_LATENCY_OPTIMIZED = env_str("BEDROCK_LATENCY_OPTIMIZED", "auto").lower()
if BEDROCK_LATENCY_OPTIMIZED not in {"auto", "true", "false"}:
    raise ImproperlyConfigured("BEDROCK_LATENCY_OPTIMIZED must be auto, true or false")
# Ask Bedrock's CountTokens for the exact prompt size of each turn (beside the call, off its path).
BEDROCK_COUNT_TOKENS = env_bool("BEDROCK_COUNT_TOKENS", False)
BEDROCK_CONNECT_TIMEOUT_SECONDS = env_float("BEDROCK_CONNECT_TIMEOUT_SECONDS", 2.0, minimum=0.1)
BEDROCK_MAX_CONNECTIONS = env_int("BEDROCK_MAX_CONNECTIONS", 200, minimum=1)
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_TIMEOUT_SECONDS = env_float("OPENAI_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.1)
LOCAL_MODEL_PATH = env_str("LOCAL_MODEL_PATH")
LOCAL_MODEL_CONTEXT = env_int("LOCAL_MODEL_CONTEXT", 4096, minimum=512)
LOCAL_MODEL_THREADS = env_int("LOCAL_MODEL_THREADS", 2, minimum=1)

# --- Catalog retrieval ------------------------------------------------------------------------

# `embedded`: the in-memory BM25 index, which every web process holds anyway (entity resolution reads
# it): a search is a fraction of a millisecond, where PostgreSQL's full-text search was a round trip
# of 16 ms p50, 52 ms p95 on the customer's path in scaled mode (100 conversations). `postgres`: always
# PostgreSQL (fresh to the row, where the index is rebuilt in the background seconds after a catalog
# change); `auto`: PostgreSQL when the database is PostgreSQL, the index otherwise.
RETRIEVAL_BACKEND = env_str("RETRIEVAL_BACKEND", "embedded")
if RETRIEVAL_BACKEND not in {"auto", "embedded", "postgres"}:
    raise ImproperlyConfigured("RETRIEVAL_BACKEND must be auto, embedded or postgres")

# How long per-turn latency records (dashboard, alarms, relearning) are kept; pruned nightly.
TURN_RECORD_RETENTION_DAYS = env_int("TURN_RECORD_RETENTION_DAYS", 90, minimum=1)

# --- Store policies (store/) ---------------------------------------------------------------

STORE_RETURN_WINDOW_DAYS = env_int("STORE_RETURN_WINDOW_DAYS", 30, minimum=0)
# Give each new browser session two sample orders, so order tracking and returns can be tried.
STORE_DEMO_ORDERS = env_bool("STORE_DEMO_ORDERS", not PRODUCTION)

# --- Chat: the socket ------------------------------------------------------------------

CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000, minimum=1)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 32_768, minimum=1024)
CHAT_KEEPALIVE_SECONDS = env_float("CHAT_KEEPALIVE_SECONDS", 5.0, minimum=0.1)
# The first delta of an answer goes out the moment it arrives; after it, what the model sends within
# this many ms of the last frame goes out in one frame. A browser paints at most every 16 ms, so the
# customer sees no difference, while the event loop writes a fraction of the frames (0: one each).
CHAT_DELTA_COALESCE_MS = env_float("CHAT_DELTA_COALESCE_MS", 20.0, minimum=0.0)
# When the event loop falls behind, the window grows with its lateness up to this (chat/pacing.py).
CHAT_DELTA_COALESCE_MAX_MS = env_float("CHAT_DELTA_COALESCE_MAX_MS", 100.0, minimum=0.0)
# How long a thread (ORM, in-process tasks) may hold the GIL before the event loop takes it back
# (mangaassist/asgi.py; CPython's default is 5 ms).
CHAT_GIL_SWITCH_INTERVAL_MS = env_float("CHAT_GIL_SWITCH_INTERVAL_MS", 0.5, minimum=0.05)
# daphne sends a frame when it is written instead of on the event loop's next pass (mangaassist/sockets.py).
CHAT_SOCKET_WRITE_AT_ONCE = env_bool("CHAT_SOCKET_WRITE_AT_ONCE", True)
# A web process caches the facts and review summaries of this many best-rated products as it starts
# (mangaassist/warmup.py), and a chat socket's session its orders and cart as it connects.
CHAT_WARM_PRODUCTS = env_int("CHAT_WARM_PRODUCTS", 2000, minimum=0)
CHAT_WARM_SESSION_ON_CONNECT = env_bool("CHAT_WARM_SESSION_ON_CONNECT", True)
# What follows an answer (saving it, the next turn's memory, in-process tasks) waits while a turn of
# the process is between its message and its model call, at most this long (chat/threads.py).
CHAT_BACKGROUND_MAX_DEFER_MS = env_float("CHAT_BACKGROUND_MAX_DEFER_MS", 250, minimum=0)
# Rate limits: messages per window, per connection and per client IP.
CHAT_RATE_LIMIT_PER_CONNECTION = env_int("CHAT_RATE_LIMIT_PER_CONNECTION", 20, minimum=1)
CHAT_RATE_LIMIT_PER_IP = env_int("CHAT_RATE_LIMIT_PER_IP", 60, minimum=1)
CHAT_RATE_LIMIT_WINDOW_SECONDS = env_int("CHAT_RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1)

# --- Chat: the pipeline ----------------------------------------------------------------------
# `naive` exists for the benchmark only (bench/): sources gathered one after another, the whole
# prompt uncompressed (every turn verbatim, no stable prefix), no prefetch (nor the cache warmed at
# start or connect, CHAT_WARM_*), no speculation.
CHAT_PIPELINE = env_str("CHAT_PIPELINE", "optimized")
if CHAT_PIPELINE not in {"optimized", "naive"}:
    raise ImproperlyConfigured(f"CHAT_PIPELINE must be optimized or naive, not {CHAT_PIPELINE!r}")
NAIVE_PIPELINE = CHAT_PIPELINE == "naive"

# --- Chat: context assembly deadlines (seconds) ---------------------------------------------

ASSEMBLY_DEADLINES = {
    "memory": env_float("ASSEMBLY_DEADLINE_MEMORY", 0.05, minimum=0.001),
    # A message that points at an earlier answer ("the second one") needs memory to be right.
    "memory_reference": env_float("ASSEMBLY_DEADLINE_MEMORY_REFERENCE", 1.0, minimum=0.001),
    "retrieval": env_float("ASSEMBLY_DEADLINE_RETRIEVAL", 0.08, minimum=0.001),
    "store": env_float("ASSEMBLY_DEADLINE_STORE", 0.05, minimum=0.001),
    "prefetch": env_float("ASSEMBLY_DEADLINE_PREFETCH", 0.02, minimum=0.001),
    # What the answer cannot do without (the facts of the series it presents, the order it is
    # about) may wait longer than enrichments (reviews, promotions) before the answer goes without.
    "essential": env_float("ASSEMBLY_DEADLINE_ESSENTIAL", 0.3, minimum=0.001),
}

# --- Chat: the model call policy (chat.orchestrator) ----------------------------------------

# The whole budget for reaching a first token, retries and fallback included.
LLM_FIRST_TOKEN_DEADLINE_SECONDS = env_float("LLM_FIRST_TOKEN_DEADLINE_SECONDS", 8.0, minimum=0.1)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0)
LLM_RETRY_BASE_SECONDS = env_float("LLM_RETRY_BASE_SECONDS", 0.1, minimum=0)
# No token for this long after the stream started: the call is treated as failed.
LLM_STALL_SECONDS = env_float("LLM_STALL_SECONDS", 10.0, minimum=0.05)

# --- Provisioned throughput (throughput/) ---
# Reserved Bedrock capacity for peak hours (DESIGN.md §8), bought by the beat schedule and the
# latency alarm, never left running by mistake (throughput/README_SECTION.md). Off by default:
# the embedded store never calls the Bedrock control plane.
import re as _re  # noqa: E402 - this block is appended on its own; the validation below needs it

PROVISIONED_THROUGHPUT_ENABLED = env_bool("PROVISIONED_THROUGHPUT_ENABLED", False)
# What is bought: model units of one model, with no commitment ("": billed hourly, deletable at
# any time) or a committed term (OneMonth / SixMonths: cannot be deleted before it ends).
PROVISIONED_MODEL_ID = env_str("PROVISIONED_MODEL_ID", BEDROCK_MODEL_ID)
PROVISIONED_MODEL_UNITS = env_int("PROVISIONED_MODEL_UNITS", 1, minimum=1)
PROVISIONED_COMMITMENT = env_str("PROVISIONED_COMMITMENT")
if PROVISIONED_COMMITMENT not in {"", "OneMonth", "SixMonths"}:
    raise ImproperlyConfigured(
        f"PROVISIONED_COMMITMENT must be empty, OneMonth or SixMonths; not {PROVISIONED_COMMITMENT!r}"
    )
# Every provisioned model this deployment creates carries this prefix, and reconciliation deletes
# any unexpected one that does: give each deployment sharing an AWS account its own prefix.
PROVISIONED_NAME_PREFIX = env_str("PROVISIONED_NAME_PREFIX", "mangaassist-")
if not _re.fullmatch(r"([0-9a-zA-Z][_-]?){1,32}", PROVISIONED_NAME_PREFIX):
    raise ImproperlyConfigured(
        "PROVISIONED_NAME_PREFIX must be 1-32 letters or digits, each optionally followed by one - or _"
    )
# USD per model unit per hour. A placeholder so the admin's estimate is never zero: set the real
# figure for your model, region and commitment from https://aws.amazon.com/bedrock/pricing/.
PROVISIONED_HOURLY_PRICE_USD = env_float("PROVISIONED_HOURLY_PRICE_USD", 50.0, minimum=0)
# Peak hours, Asia/Tokyo. They seed the beat schedule when it is first installed; afterwards the
# crontabs edited in the admin are the truth (throughput.schedule).
PEAK_START_HOUR = env_int("PEAK_START_HOUR", 9, minimum=0)
PEAK_END_HOUR = env_int("PEAK_END_HOUR", 23, minimum=0)
if PEAK_START_HOUR > 23 or PEAK_END_HOUR > 23 or PEAK_START_HOUR == PEAK_END_HOUR:
    raise ImproperlyConfigured("PEAK_START_HOUR and PEAK_END_HOUR must be different hours in 0-23")
PROVISIONED_RECONCILE_MINUTES = env_int("PROVISIONED_RECONCILE_MINUTES", 5, minimum=1)
if PROVISIONED_RECONCILE_MINUTES > 30:
    raise ImproperlyConfigured("PROVISIONED_RECONCILE_MINUTES must be at most 30")
# A creation still not InService after this long is given up (and deleted); the next automatic
# attempt waits PROVISIONED_RETRY_AFTER_MINUTES after a failure.
PROVISIONED_CREATE_TIMEOUT_MINUTES = env_int("PROVISIONED_CREATE_TIMEOUT_MINUTES", 60, minimum=1)
PROVISIONED_RETRY_AFTER_MINUTES = env_int("PROVISIONED_RETRY_AFTER_MINUTES", 30, minimum=1)
# Routing stops this long before a delete, so no turn is sent to a deleted model; it must
# exceed PROVISIONED_ROUTE_CACHE_SECONDS (how long each process may reuse its routing answer).
PROVISIONED_ROUTE_CACHE_SECONDS = env_float("PROVISIONED_ROUTE_CACHE_SECONDS", 5.0, minimum=0)
PROVISIONED_DRAIN_SECONDS = env_float("PROVISIONED_DRAIN_SECONDS", 15.0, minimum=0)
# Latency alarm (DESIGN.md §6): first-token p95 over the last PROVISIONED_ALARM_LOOKBACK_MINUTES,
# from at least PROVISIONED_ALARM_MIN_SAMPLES answers, above PROVISIONED_ALARM_P95_MS buys
# capacity even off-peak, for PROVISIONED_ALARM_HOLD_MINUTES at a time and at most
# PROVISIONED_ALARM_MAX_HOURS_PER_DAY per Tokyo day.
PROVISIONED_ALARM_P95_MS = env_float("PROVISIONED_ALARM_P95_MS", 500.0, minimum=1)
PROVISIONED_ALARM_LOOKBACK_MINUTES = env_int("PROVISIONED_ALARM_LOOKBACK_MINUTES", 5, minimum=1)
PROVISIONED_ALARM_MIN_SAMPLES = env_int("PROVISIONED_ALARM_MIN_SAMPLES", 20, minimum=1)
PROVISIONED_ALARM_HOLD_MINUTES = env_int("PROVISIONED_ALARM_HOLD_MINUTES", 60, minimum=10)
PROVISIONED_ALARM_MAX_HOURS_PER_DAY = env_float("PROVISIONED_ALARM_MAX_HOURS_PER_DAY", 2.0, minimum=0)
