"""RQ jobs: plain functions that take ids and run inside the app context.

They are only nudges: the database says what is to be done, so running a job
twice, late, or never (the sweeper and cron repeat them) loses nothing.
"""

import logging

from rq import get_current_job

from posta.extensions import db
from posta.models import AccountKind, EmailAccount
from posta.services import graph_sync, inbound, outgoing

logger = logging.getLogger(__name__)


def send_message(message_id: int) -> None:
    """Send a queued message, then the rest of its account's queue."""
    logger.info("job send_message(%s)%s", message_id, _job_suffix())
    outgoing.deliver(message_id)


def sync_account(account_id: int) -> None:
    """Sync one account's folders."""
    logger.info("job sync_account(%s)%s", account_id, _job_suffix())
    account = db.session.get(EmailAccount, account_id)
    kind = account.kind if account else None
    # Let go of the read before the long sync; it opens its own transactions.
    db.session.commit()
    if kind == AccountKind.GRAPH:
        graph_sync.sync_account(account_id)
    else:
        inbound.sync_account(account_id)


def sweep_outgoing() -> None:
    """Re-enqueue queued sends whose nudge was lost; fail sends stuck in flight."""
    logger.info("job sweep_outgoing()%s", _job_suffix())
    outgoing.sweep()


def _job_suffix() -> str:
    """Return " [rq job <id>]" inside an RQ worker, else ""."""
    job = get_current_job()
    return f" [rq job {job.id}]" if job else ""
