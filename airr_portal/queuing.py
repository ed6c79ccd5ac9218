"""Queuing a Celery task once the database transaction that calls for it has committed."""

import logging
from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import KombuError

logger = logging.getLogger(__name__)


def queue_after_commit(task, *args, if_not_queued: Callable[[], None] | None = None) -> None:
    """Queue `task` once this transaction commits; a broker that cannot take it is logged, not raised.

    What the request did is committed by then: a broker that is down must not turn its answer into an error,
    which would tell the user (or the cluster) that it failed. The error is logged for the operators. Where
    the work must happen anyway, a beat task or a later check finds what was left undone (the usage tasks do),
    or `if_not_queued` records that it will not happen.
    """

    def send() -> None:
        try:
            task.delay(*args)
        except (KombuError, OSError) as problem:
            logger.error("%s%s could not be queued (%s)", task.name, args, problem)
            if if_not_queued is not None:
                if_not_queued()

    transaction.on_commit(send)
