from django.apps import AppConfig


class PrefetchConfig(AppConfig):
    name = "prefetch"
    verbose_name = "Speculative prefetch"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - transition edits and cart changes reach every process
