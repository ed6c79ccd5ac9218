"""The home page, the service's static pages and the health check."""

import logging
import time
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from . import roles, services
from .celery import app as celery_app
from .models import ApiToken
from .tasks import ping_task

logger = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "airr_portal/home.html", {"roles": roles.roles_of(request.user)})


@require_GET
def accessibility(request: HttpRequest) -> HttpResponse:
    return render(request, "airr_portal/accessibility.html")


@require_GET
def privacy(request: HttpRequest) -> HttpResponse:
    return render(request, "airr_portal/privacy.html")


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    with celery_app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _check_worker() -> str:
    token = uuid.uuid4().hex
    reply = ping_task.apply_async(args=[token]).get(timeout=settings.HEALTH_WORKER_TIMEOUT)
    if reply != f"pong:{token}":
        raise RuntimeError(f"unexpected reply {reply!r}")
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Report the database, the broker and a round trip through a worker; 503 if any of them fails."""
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker), ("worker", _check_worker)):
        started = time.monotonic()
        try:
            status = check()
        except Exception as error:  # noqa: BLE001 - a health check reports every failure instead of raising it
            logger.warning("health check failed", extra={"check": name, "error": str(error)})
            status = f"failing: {type(error).__name__}"
        checks[name] = {"status": status, "milliseconds": round((time.monotonic() - started) * 1000)}
    healthy = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "failing", "checks": checks}, status=200 if healthy else 503)


@login_required
@require_http_methods(["GET", "POST"])
def api_token(request: HttpRequest) -> HttpResponse:
    """Show whether the user has an API token; POST makes a new one (replacing the old) and shows it once."""
    new_key = None
    if request.method == "POST":
        new_key = services.replace_api_token(user=request.user)
        logger.info("api token replaced", extra={"user_id": request.user.pk})
    token = ApiToken.objects.filter(user=request.user).first()
    return render(request, "airr_portal/api_token.html", {"token": token, "new_key": new_key})
