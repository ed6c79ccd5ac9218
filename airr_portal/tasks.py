"""Tasks of the project itself."""

from celery import shared_task


@shared_task
def ping_task(token: str) -> str:
    """Echo a token back, so /healthz can show that a worker is consuming the default queue."""
    return f"pong:{token}"
