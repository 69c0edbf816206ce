"""An admin's edit to the FAQ reaches every process's chat on the next question."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from mangaassist.cached_config import cached_config_invalidate

from .models import FaqEntry
from .selectors import FAQ_KEY


@receiver(post_save, sender=FaqEntry)
@receiver(post_delete, sender=FaqEntry)
def faq_changed(**kwargs: object) -> None:
    transaction.on_commit(lambda: cached_config_invalidate(FAQ_KEY))
