"""Edits reach every process on the next turn: the cached configuration and cart summaries are
dropped once the change commits."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from mangaassist.cached_config import cached_config_invalidate
from store.models import CartItem

from .models import PrefetchSettings, Transition
from .selectors import cart_key, prefetch_config_invalidate


@receiver(post_save, sender=Transition)
@receiver(post_delete, sender=Transition)
@receiver(post_save, sender=PrefetchSettings)
@receiver(post_delete, sender=PrefetchSettings)
def prefetch_config_changed(**kwargs: Any) -> None:
    transaction.on_commit(prefetch_config_invalidate)


@receiver(post_save, sender=CartItem)
@receiver(post_delete, sender=CartItem)
def cart_changed(instance: CartItem, **kwargs: Any) -> None:
    """A prefetched cart summary must not outlive the cart it describes (its 5-minute TTL bounds a
    change made without the ORM's signals)."""
    key = cart_key(instance.session_key)
    transaction.on_commit(lambda: cached_config_invalidate(key))
