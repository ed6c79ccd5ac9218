"""Tasks of the project itself."""

from celery import shared_task


@shared_task
def ping_task(token: str) -> str:
    """Echo a token back, so /healthz can show that a worker is consuming the default queue."""
    return f"pong:{token}"


# A mail server that fails is not retried here: the email records the failure and waits, longer after each, for
# the beat (`send_unsent_emails_task`) to hand it over again (airr_portal/mail.py).
@shared_task
def send_email_task(email_id: int) -> bool:
    """Send one owed email (airr_portal/mail.py); False if it was sent already or is being sent."""
    from .mail import send_email

    return send_email(email_id)


@shared_task
def send_unsent_emails_task() -> int:
    """Queue again the emails left unsent; returns how many."""
    from .mail import send_unsent_emails

    return send_unsent_emails()
