from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "store"
    verbose_name = "Store (orders, carts, FAQ)"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - FAQ edits reach every process
