"""ASGI entry point: HTTP through Django, WebSocket chat through Channels."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mangaassist.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from mangaassist.sockets import write_at_once  # noqa: E402
from mangaassist.warmup import warm_up_in_background  # noqa: E402

# The event loop shares the interpreter with the database and task threads. A thread keeps the GIL
# for up to the switch interval (CPython's default 5 ms) before the loop gets it back: every wait of
# that kind is time added to some customer's first token. A shorter interval bounds it.
sys.setswitchinterval(settings.CHAT_GIL_SWITCH_INTERVAL_MS / 1000)
if settings.CHAT_SOCKET_WRITE_AT_ONCE:
    write_at_once()


def allowed_origins() -> list[str]:
    """The store's own hosts plus the explicitly listed embedding origins."""
    hosts = [host for host in settings.ALLOWED_HOSTS if host != "testserver"]
    return hosts + list(settings.CHAT_ALLOWED_ORIGINS)


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(
            SessionMiddlewareStack(URLRouter(websocket_urlpatterns)),
            allowed_origins(),
        ),
    }
)

if os.environ.get("MANGAASSIST_WARMUP", "true").lower() != "false":
    warm_up_in_background()
