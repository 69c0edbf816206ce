"""The store's HTTP side: pages, health, metrics, production settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from catalog.models import Product

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


@pytest.fixture
def store(client: Client, demo_catalog: None) -> Client:
    return client


class StorePageTests:
    def test_store_page_lists_the_catalog_and_embeds_the_chat(self, store: Client) -> None:
        response = store.get("/")
        body = response.content.decode()
        assert response.status_code == 200
        assert "One Piece" in body and "Dragon Ball" in body
        assert "mangaassist/widget.js" in body and 'id="mangaassist-page"' in body
        assert response.cookies["sessionid"].value  # the chat needs a session to resume

    def test_section_filter_and_search(self, store: Client) -> None:
        assert "Golgo 13" in store.get("/?section=seinen").content.decode()
        assert "Golgo 13" not in store.get("/?section=shonen").content.decode()
        assert "Naruto" in store.get("/?q=naru").content.decode()

    def test_the_listing_shows_a_catalog_edit_at_once(self, store: Client) -> None:
        naruto = Product.objects.get(title_en="Naruto")
        assert f"¥{naruto.price_yen} / vol" in store.get("/?q=naruto").content.decode()  # rendered and kept
        naruto.price_yen = 1234
        naruto.save()
        assert "¥1234 / vol" in store.get("/?q=naruto").content.decode()

    def test_product_page_sets_the_page_context(self, store: Client) -> None:
        product = Product.objects.get(title_en="Naruto")
        body = store.get(product.get_absolute_url()).content.decode()
        assert product.title_ja in body and f'"current_asin": "{product.sku}"' in body

    def test_unknown_product_is_404(self, store: Client) -> None:
        assert store.get("/products/NOPE/").status_code == 404

    def test_widget_script_is_served(self, store: Client) -> None:
        response = store.get("/static/mangaassist/widget.js")
        assert response.status_code == 200


class OperationsTests:
    def test_healthz_checks_the_database(self, client: Client) -> None:
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}

    def test_metrics_exposes_chat_metrics(self, client: Client) -> None:
        body = client.get("/metrics").content.decode()
        for name in ("mangaassist_llm_first_token_seconds", "mangaassist_prompt_tokens",
                     "mangaassist_context_assembly_seconds", "mangaassist_prefetch_lookups_total"):
            assert f"# TYPE {name}" in body

    def test_conversation_history_is_only_for_its_session(self, client: Client) -> None:
        import uuid

        assert client.get(f"/chat/conversations/{uuid.uuid4()}/").status_code == 404


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


class SettingsTests:
    def test_production_profile_passes_check_deploy(self) -> None:
        result = _manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_PRODUCTION="true",
                         DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-key-0123456789")
        assert result.returncode == 0, result.stderr + result.stdout

    def test_production_refuses_to_start_without_a_secret(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
        result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                                env={**env, "DJANGO_PRODUCTION": "true"}, timeout=120)
        assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr

    def test_bad_setting_is_a_clear_error(self) -> None:
        result = _manage("check", LLM_BACKEND="gpt-banana")
        assert result.returncode != 0 and "LLM_BACKEND must be one of" in result.stderr
