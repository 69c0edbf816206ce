"""Security basics: the production profile, the admin, and secrets that never reach the logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from chat.consumers import ChatConsumer
from chat.orchestrator import Orchestrator
from tests.conftest import open_chat, saved_turns

ROOT = Path(__file__).resolve().parent.parent.parent

AWS_ACCESS_KEY_ID = "AKIAMANGAASSISTTEST7"
AWS_SECRET_ACCESS_KEY = "s3cr3t/MangaAssist+never+log+this+0123456789"
AWS_SESSION_TOKEN = "FwoGZXIvYXdzEMangaAssistSessionTokenNeverLogThis0123456789abcdef"
OPENAI_API_KEY = "sk-mangaassist-test-key-never-log-this-0123456789"

_PRODUCTION_PROBE = r"""
import json, os
import django
django.setup()
from django.conf import settings
from django.test import Client

client = Client()
secure = client.get("/admin/login/", secure=True)
plain = client.get("/admin/login/")
health = client.get("/healthz")
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "SESSION_COOKIE_HTTPONLY": settings.SESSION_COOKIE_HTTPONLY,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "X_FRAME_OPTIONS": settings.X_FRAME_OPTIONS,
    "secure_status": secure.status_code,
    "hsts": secure.headers.get("Strict-Transport-Security"),
    "csrf_cookie_secure": bool(secure.cookies["csrftoken"]["secure"]) if "csrftoken" in secure.cookies else None,
    "frame_options": secure.headers.get("X-Frame-Options"),
    "nosniff": secure.headers.get("X-Content-Type-Options"),
    "plain_status": plain.status_code,
    "plain_location": plain.headers.get("Location"),
    "health_status": health.status_code,
}))
"""


def _production(tmp_path: Path, **env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PRODUCTION_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "mangaassist.settings", "DJANGO_PRODUCTION": "true",
             "DJANGO_SECRET_KEY": "p" * 20 + "-a-long-random-production-secret-key-0123456789",
             "SQLITE_PATH": str(tmp_path / "probe.sqlite3"), "MANGAASSIST_WARMUP": "false", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


class ProductionProfileTests:
    def test_cookies_are_secure_and_https_is_enforced_with_hsts(self, tmp_path: Path) -> None:
        probe = _production(tmp_path)
        assert probe["DEBUG"] is False
        assert probe["SESSION_COOKIE_SECURE"] and probe["CSRF_COOKIE_SECURE"] and probe["SESSION_COOKIE_HTTPONLY"]
        assert probe["SECURE_HSTS_SECONDS"] >= 31_536_000 and probe["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
        assert probe["SECURE_SSL_REDIRECT"] and probe["X_FRAME_OPTIONS"] == "DENY"
        # What a browser sees: HSTS on HTTPS, secure cookies, no framing, no sniffing; HTTP is redirected.
        assert probe["secure_status"] == 200
        assert probe["hsts"].startswith("max-age=31536000") and "includeSubDomains" in probe["hsts"]
        assert probe["csrf_cookie_secure"] is True
        assert (probe["frame_options"], probe["nosniff"]) == ("DENY", "nosniff")
        assert probe["plain_status"] == 301 and probe["plain_location"].startswith("https://")
        # Load balancer health checks may stay on plain HTTP (SECURE_REDIRECT_EXEMPT).
        assert probe["health_status"] != 301

    def test_debug_in_production_fails_the_deploy_check(self) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "DJANGO_PRODUCTION": "true", "DJANGO_DEBUG": "true",
                 "DJANGO_SECRET_KEY": "p" * 20 + "-a-long-random-production-secret-key-0123456789"})
        assert result.returncode != 0 and "security.W018" in result.stderr + result.stdout


@pytest.mark.django_db
class AdminAccessTests:
    @pytest.fixture
    def customer(self) -> User:
        return User.objects.create_user("customer", password="a-customer-password-123")

    @pytest.fixture
    def staff(self) -> User:
        return User.objects.create_user("pm", password="a-staff-password-1234", is_staff=True, is_superuser=True)

    @pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard/", "/admin/chat/promptbudget/"])
    def test_anonymous_visitors_are_sent_to_the_login(self, client: Client, path: str) -> None:
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/")

    @pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard/", "/admin/chat/promptbudget/"])
    def test_a_logged_in_customer_who_is_not_staff_is_refused(self, client: Client, customer: User, path: str) -> None:
        client.force_login(customer)
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/")

    def test_a_customer_cannot_log_in_to_the_admin(self, customer: User) -> None:
        client = Client()
        page = client.get("/admin/login/")
        response = client.post("/admin/login/?next=/admin/", {
            "username": "customer", "password": "a-customer-password-123",
            "csrfmiddlewaretoken": page.cookies["csrftoken"].value})
        assert response.status_code == 200  # the form again, with an error
        assert client.get("/admin/").status_code == 302

    def test_staff_reach_the_admin_and_the_dashboard(self, client: Client, staff: User) -> None:
        client.force_login(staff)
        assert client.get("/admin/").status_code == 200
        assert client.get("/admin/dashboard/").status_code == 200

    def test_admin_login_without_a_csrf_token_is_forbidden(self, staff: User) -> None:
        client = Client(enforce_csrf_checks=True)
        response = client.post("/admin/login/", {"username": "pm", "password": "a-staff-password-1234"})
        assert response.status_code == 403
        assert client.get("/admin/").status_code == 302  # not logged in

    def test_admin_changes_without_a_csrf_token_are_forbidden(self, staff: User) -> None:
        client = Client(enforce_csrf_checks=True)
        client.force_login(staff)
        assert client.post("/admin/logout/").status_code == 403
        assert client.post("/admin/auth/user/add/", {"username": "intruder"}).status_code == 403
        assert not User.objects.filter(username="intruder").exists()

    def test_store_forms_need_a_csrf_token_too(self, demo_catalog: None) -> None:
        client = Client(enforce_csrf_checks=True)
        assert client.post("/store/cart/add", {"sku": "B0XXXXXXXX", "volume": "1"}).status_code == 403

    def test_admin_pages_cannot_be_framed_or_cached(self, client: Client, staff: User) -> None:
        client.force_login(staff)
        response = client.get("/admin/dashboard/")
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "no-cache" in response.headers.get("Cache-Control", "") or "private" in response.headers.get(
            "Cache-Control", "")


def _capture_logs(caplog: pytest.LogCaptureFixture, level: int) -> None:
    """Capture every record from `level` up, as an operator setting LOG_LEVEL would get them."""
    import mangaassist.asgi  # noqa: F401 - its django.setup() re-applies LOGGING: first, not after set_level

    caplog.set_level(level)


# LOG_LEVEL=INFO is the production default; DEBUG is what an operator turns on to chase a problem.
LOG_LEVELS = [pytest.param(logging.INFO, id="INFO"), pytest.param(logging.DEBUG, id="DEBUG")]


def _everything_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> str:
    captured = capfd.readouterr()
    return caplog.text + captured.out + captured.err


@pytest.mark.django_db(transaction=True)
class SecretsNotLoggedTests:
    """Credentials come from the environment and never show up in logs, frames or saved rows (DESIGN.md §5)."""

    @pytest.fixture
    def aws_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY)
        monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)
        monkeypatch.delenv("AWS_PROFILE", raising=False)

    @staticmethod
    async def _saved_rows() -> str:
        from chat.models import Turn, TurnRecord

        rows = await sync_to_async(lambda: [
            *Turn.objects.values_list("text", "failure_reason", "metrics"),
            *TurnRecord.objects.values_list("route", "backend", "degraded_sources")])()
        return json.dumps(rows, default=str)

    @pytest.mark.parametrize("level", LOG_LEVELS)
    async def test_aws_keys_never_reach_logs_frames_or_the_database(
        self, demo_catalog: None, aws_credentials: None, settings, caplog, capfd, level: int  # type: ignore[no-untyped-def]
    ) -> None:
        from chat.llm.bedrock import BedrockBackend
        from tests.fakes.bedrock_runtime import FakeBedrockRuntime, Reply

        _capture_logs(caplog, level)
        with FakeBedrockRuntime() as fake:
            settings.BEDROCK_ENDPOINT_URL = fake.url
            settings.LLM_BACKEND = "bedrock"
            settings.LLM_MAX_RETRIES = 0
            ChatConsumer.orchestrator = Orchestrator(backend=BedrockBackend())
            fake.push(Reply(chunks=["**Naruto**", " is in", " stock."]))
            fake.push(Reply(status=403, error_type="UnrecognizedClientException"))  # a rejected key
            fake.push(Reply(chunks=["Hello", " again"], exception_after=1))  # broken mid-stream
            chat = await open_chat()
            frames = [*await chat.ask("Is Naruto in stock?", "k1"), *await chat.ask("Hello", "k2"),
                      *await chat.ask("Hi there", "k3")]
            await chat.ws.disconnect()
            signed = [call.headers.get("Authorization", "") for call in fake.calls]
        await saved_turns(6)

        assert [f["type"] for f in frames if f["type"] in {"completed", "error"}] == ["completed", "error", "error"]
        assert all(AWS_ACCESS_KEY_ID in header for header in signed)  # the keys were really used
        logged = _everything_logged(caplog, capfd)
        assert "credentials" in logged.lower()  # boto3 did log (the test is not blind)
        shown = json.dumps(frames) + await self._saved_rows()
        for secret in (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN):
            assert secret not in logged
            assert secret not in shown
        assert AWS_ACCESS_KEY_ID not in shown
        # At the production log level (INFO), not even the key id (botocore logs it only in DEBUG dumps).
        assert AWS_ACCESS_KEY_ID not in "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)

    async def test_openai_key_never_reaches_logs_frames_or_the_database(
        self, demo_catalog: None, settings, caplog, capfd  # type: ignore[no-untyped-def]
    ) -> None:
        from chat.llm.openai import OpenAICompatibleBackend
        from tests.fakes.openai_sse import FakeOpenAIServer, SSEReply

        _capture_logs(caplog, logging.DEBUG)
        with FakeOpenAIServer() as fake:
            settings.OPENAI_API_KEY = OPENAI_API_KEY
            settings.LLM_MAX_RETRIES = 0
            ChatConsumer.orchestrator = Orchestrator(backend=OpenAICompatibleBackend(base_url=fake.url, model="m"))
            fake.push(SSEReply(chunks=["**Naruto**", " is in stock."]))
            fake.push(SSEReply(status=401))
            chat = await open_chat()
            frames = [*await chat.ask("Is Naruto in stock?", "o1"), *await chat.ask("Hello", "o2")]
            await chat.ws.disconnect()
        await saved_turns(4)

        assert [f["type"] for f in frames if f["type"] in {"completed", "error"}] == ["completed", "error"]
        logged = _everything_logged(caplog, capfd)
        assert OPENAI_API_KEY not in logged
        assert OPENAI_API_KEY not in json.dumps(frames) + await self._saved_rows()
