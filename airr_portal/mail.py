"""Emails the portal owes people, kept in the database until sent (OutgoingEmail): a broker or mail server that
is down delays an email, it does not lose it.

`email_after_commit` writes the emails in the caller's transaction, so they exist exactly when what called for
them was committed, and queues their sending once it commits. `send_email` sends one, at most once at a time;
a mail server's refusal is recorded and the email held back for a while, longer after each failure, and the
beat's `send_unsent_emails` hands over again what was left unsent once it may be tried.
"""

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F, Q
from django.utils import timezone

from .models import OutgoingEmail
from .queuing import queue_after_commit

logger = logging.getLogger(__name__)

# How long a sender holds its claim on an email: longer than any mail server takes to answer.
CLAIM = timedelta(minutes=5)
# An email still unsent this long after it was written lost its task (or its task gave up): the beat sends it.
UNSENT_AFTER = timedelta(minutes=10)
# After this many failed sends an email is left for an admin to see (its last error is kept), not tried again.
MAX_ATTEMPTS = 10
# After a failed send the email waits this long, doubled after each further failure up to RETRY_LONGEST: the ten
# tries then span about a day, so a mail server down for hours delays emails rather than exhausting their tries.
RETRY_FIRST = timedelta(minutes=5)
RETRY_LONGEST = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """How long an email waits after its `attempts`-th failed send."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_LONGEST)


def email_after_commit(subject: str, body: str, to: Iterable[str]) -> list[OutgoingEmail]:
    """Owe `to` this email: one row per address (each once, ignoring case), sent once the transaction commits."""
    from .tasks import send_email_task

    addresses, seen = [], set()
    for address in to:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            addresses.append(address)
    subject = settings.ACCOUNT_EMAIL_SUBJECT_PREFIX + subject
    emails = OutgoingEmail.objects.bulk_create(
        OutgoingEmail(to=address, subject=subject, body=body) for address in addresses
    )
    for email in emails:
        queue_after_commit(send_email_task, email.pk)
    return emails


def send_email(email_id: int) -> bool:
    """Send one owed email; False if it is sent already, another sender holds it, or the mail server failed.

    A mail server's error (smtplib's are OSErrors) is recorded on the email, which then waits `retry_delay`
    before the beat tries it again. Sending is at least once: a worker that dies between the mail server's
    answer and the record of it leaves the email to be sent again.
    """
    now = timezone.now()
    claimed = (
        OutgoingEmail.objects.filter(pk=email_id, sent_at__isnull=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + CLAIM, attempts=F("attempts") + 1)
    )
    if not claimed:
        return False
    email = OutgoingEmail.objects.get(pk=email_id)
    try:
        send_mail(email.subject, email.body, None, [email.to])
    except OSError as problem:
        # Held back until its next try: neither this task nor the beat sends it before then.
        wait = retry_delay(email.attempts)
        OutgoingEmail.objects.filter(pk=email_id).update(
            claimed_until=timezone.now() + wait, last_error=str(problem)[:2000]
        )
        logger.warning(
            "Email %s to %s failed (try %d), tried again in %s: %s", email_id, email.to, email.attempts, wait, problem
        )
        return False
    OutgoingEmail.objects.filter(pk=email_id).update(sent_at=timezone.now(), claimed_until=None, last_error="")
    return True


def unsent_emails():
    """Emails owed for longer than UNSENT_AFTER, not held by a sender, and not yet given up on."""
    now = timezone.now()
    return OutgoingEmail.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        sent_at__isnull=True,
        created_at__lt=now - UNSENT_AFTER,
        attempts__lt=MAX_ATTEMPTS,
    )


def send_unsent_emails(limit: int = 500) -> int:
    """Queue again the emails left unsent (see `unsent_emails`), oldest first; returns how many."""
    from .tasks import send_email_task

    email_ids = list(unsent_emails().order_by("created_at", "pk").values_list("pk", flat=True)[:limit])
    for email_id in email_ids:
        queue_after_commit(send_email_task, email_id)
    if email_ids:
        logger.warning("%d emails were left unsent and are queued again", len(email_ids))
    return len(email_ids)
