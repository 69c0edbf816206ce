"""Fixtures for speculative prefetch: the §8 transitions, the demo products, a real Celery broker."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from prefetch.models import PrefetchSettings

CLOSED_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1
REDIS_BROKER = os.environ.get("TEST_PREFETCH_BROKER_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture
def transitions(db: None) -> None:
    """DESIGN.md §8 transitions and settings (transactional tests flush what migration 0002 installed)."""
    from prefetch.services import transitions_starting_values_install

    transitions_starting_values_install()


@pytest.fixture
def prefetch_settings_set(transitions: None) -> Callable[..., PrefetchSettings]:
    """`prefetch_settings_set(deadline_seconds=...)` stores the settings as a PM would (signals included)."""

    def change(**fields: object) -> PrefetchSettings:
        row = PrefetchSettings.objects.get()
        for name, value in fields.items():
            setattr(row, name, value)
        row.save()
        return row

    return change


@pytest.fixture
def shown(demo_catalog: None) -> list[int]:
    """Ids of the best-selling series, as a product_discovery answer would show them."""
    from catalog.models import Product

    return list(Product.objects.order_by("-sales_millions", "id").values_list("id", flat=True)[:25])


def _forget_broker_connections() -> None:
    # Celery keeps the producer pool of the first broker it published to; a test that moves the
    # broker must drop it, before and after.
    from mangaassist.celery import app

    app._pool = None
    amqp = app.__dict__.get("amqp")  # a cached property: reset it only where it exists
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture
def broker(settings) -> Iterator[Callable[[str], None]]:  # type: ignore[no-untyped-def]
    """`broker(url)`: tasks go to a real broker at `url` instead of the in-process pool."""

    def use(url: str) -> None:
        settings.CELERY_TASKS_IN_PROCESS = False
        settings.CELERY_BROKER_URL = url
        _forget_broker_connections()

    yield use
    _forget_broker_connections()
