"""Catalog changes move the catalog version on, so every process refreshes its index."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Product
from .retrieval import catalog_version_bump


@receiver(post_save, sender=Product)
@receiver(post_delete, sender=Product)
def product_changed(**kwargs: object) -> None:
    transaction.on_commit(catalog_version_bump)
