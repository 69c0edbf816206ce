"""A PM's edit to the prompt configuration reaches every process on the next request."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import IntentPromptConfig, PromptBudget
from .prompt_config import prompt_config_invalidate


@receiver(post_save, sender=PromptBudget)
@receiver(post_delete, sender=PromptBudget)
@receiver(post_save, sender=IntentPromptConfig)
@receiver(post_delete, sender=IntentPromptConfig)
def prompt_config_changed(**kwargs: object) -> None:
    transaction.on_commit(prompt_config_invalidate)
