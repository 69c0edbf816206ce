"""Operational endpoints."""

from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database answers and the process has warmed up."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception:  # noqa: BLE001
        database = "unavailable"
    from .warmup import READY

    if database != "ok":
        return JsonResponse({"status": "degraded", "database": database}, status=503)
    if not READY.is_set():
        # Readiness: the index and the intent model are still loading; a load balancer waits.
        return JsonResponse({"status": "warming", "database": database}, status=503)
    return JsonResponse({"status": "ok", "database": database})
