"""The live prompt configuration (budget, page fields per intent), as the PMs set it in the admin.

Read through the shared cache so a PM's change reaches the very next request in
every web process: saving either model deletes the cached copy (chat.signals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mangaassist.cached_config import cached_config, cached_config_invalidate

from .compression import TokenBudget

CONFIG_KEY = "chat:prompt-config"

DEFAULT_PAGE_FIELDS: dict[str, list[str]] = {
    "product_question": ["current_asin", "store_section"],
    "recommendation": ["browsing_history", "store_section"],
    "product_discovery": ["browsing_history", "store_section"],
    "order_tracking": [],
    "return_request": ["current_asin"],
    "faq": ["store_section"],
    "promotion": ["store_section", "cart_asins"],
    "checkout_help": ["cart_asins"],
    "chitchat": [],
}


@dataclass(frozen=True)
class PromptConfig:
    budget: TokenBudget = TokenBudget()
    page_fields: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_PAGE_FIELDS))


def _load() -> PromptConfig:
    from .models import IntentPromptConfig, PromptBudget

    row = PromptBudget.objects.filter(active=True).first()
    budget = TokenBudget(row.system, row.retrieved, row.conversation, row.page, row.user, row.total) if row else TokenBudget()
    fields = dict(DEFAULT_PAGE_FIELDS)
    fields.update({c.intent: list(c.page_fields) for c in IntentPromptConfig.objects.all()})
    return PromptConfig(budget=budget, page_fields=fields)


def prompt_config() -> PromptConfig:
    """The active configuration: one cache read, the database only after a change."""
    return cached_config(CONFIG_KEY, _load, PromptConfig, timeout=None)


def prompt_config_invalidate() -> None:
    cached_config_invalidate(CONFIG_KEY)
