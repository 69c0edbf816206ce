"""MangaAssist: the chat assistant of an online manga store."""

from .celery import app as celery_app

__all__ = ["celery_app"]
