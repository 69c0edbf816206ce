"""An admin's edit to the FAQ, or any change to an order, reaches every process's chat on the next
question."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from mangaassist.cached_config import cached_config_invalidate

from .models import FaqEntry, Order, OrderItem
from .selectors import FAQ_KEY, orders_key


@receiver(post_save, sender=FaqEntry)
@receiver(post_delete, sender=FaqEntry)
def faq_changed(**kwargs: object) -> None:
    transaction.on_commit(lambda: cached_config_invalidate(FAQ_KEY))


@receiver(post_save, sender=Order)
@receiver(post_delete, sender=Order)
@receiver(post_save, sender=OrderItem)
@receiver(post_delete, sender=OrderItem)
def order_changed(instance: Order | OrderItem, **kwargs: object) -> None:
    """The chat's copy of the session's orders must not outlive a change to them (its TTL bounds a
    change made without the ORM's signals, such as a bulk update)."""
    try:
        session_key = instance.session_key if isinstance(instance, Order) else instance.order.session_key
    except Order.DoesNotExist:  # an item deleted with its order: the order's own signal drops the copy
        return
    transaction.on_commit(lambda: cached_config_invalidate(orders_key(session_key)))
