"""Watch IMAP accounts for new mail: one open session per account, IDLE or polls.

`flask --app app email watch` runs a Watcher. Each active IMAP account gets a
thread that logs in once, runs the sync pass in that session, then waits: in
IDLE where the server offers it (re-syncing when it reports EXISTS, and every
IDLE_SECONDS anyway, as RFC 2177 asks clients to renew IDLE), else for
`poll_seconds` before the next pass, whose idle check is one EXAMINE. A broken
connection is opened again after a growing pause.

Every pass goes through inbound.sync_account, so it takes the account's sync
lease like a cron sync and never overlaps one; when the lease is held the
watcher just waits for the next change. No database transaction is open while
a thread waits on the network.
"""

import logging
import threading

from flask import Flask

from posta.extensions import db
from posta.mail.errors import MailError
from posta.mail.imap import ImapSession
from posta.models import AccountKind, AccountStatus, EmailAccount
from posta.services import accounts, inbound

logger = logging.getLogger(__name__)

IDLE_SECONDS = 300
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
RESCAN_SECONDS = 60.0


class Watcher:
    """Keep a watching thread per active IMAP account until stopped."""

    def __init__(self, app: Flask, poll_seconds: float = 30.0, use_idle: bool = True):
        self.app = app
        self.poll_seconds = poll_seconds
        self.use_idle = use_idle
        self._stop = threading.Event()
        self._threads: dict[int, threading.Thread] = {}

    def run(self) -> None:
        """Watch until stop() is called, picking up newly connected accounts."""
        while not self._stop.is_set():
            for account_id in self._account_ids():
                thread = self._threads.get(account_id)
                if thread is None or not thread.is_alive():
                    self._start(account_id)
            self._stop.wait(RESCAN_SECONDS)
        for thread in self._threads.values():
            thread.join()

    def stop(self) -> None:
        """Ask every thread to log out and end."""
        self._stop.set()

    def _account_ids(self) -> list[int]:
        with self.app.app_context():
            ids = [a.id for a in EmailAccount.syncable() if a.kind == AccountKind.IMAP]
            db.session.commit()
        return ids

    def _start(self, account_id: int) -> None:
        thread = threading.Thread(
            target=self._watch, args=(account_id,), name=f"watch-{account_id}"
        )
        self._threads[account_id] = thread
        thread.start()

    def _watch(self, account_id: int) -> None:
        """Sync and wait in one session; reconnect with backoff when it breaks."""
        backoff = BACKOFF_FIRST
        with self.app.app_context():
            while not self._stop.is_set():
                settings = _settings(account_id)
                if settings is None:
                    logger.info("account %s: no longer watched", account_id)
                    return
                try:
                    with ImapSession(settings) as session:
                        backoff = BACKOFF_FIRST
                        self._session(account_id, session)
                except MailError as exc:
                    logger.warning(
                        "account %s folder INBOX: watch failed (%s); again in %.0f s",
                        account_id,
                        exc.kind,
                        backoff,
                    )
                except Exception:
                    # A long-running watcher outlives one bad pass; the pass
                    # itself recorded what it could on the account.
                    db.session.rollback()
                    logger.exception(
                        "account %s folder INBOX: watch pass crashed; again in %.0f s",
                        account_id,
                        backoff,
                    )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _session(self, account_id: int, session: ImapSession) -> None:
        """Alternate sync passes and waits until stopped or the account goes."""
        idle = self.use_idle and session.supports_idle()
        logger.info(
            "account %s folder INBOX: watching with %s",
            account_id,
            "IDLE" if idle else f"a poll every {self.poll_seconds:g} s",
        )
        while not self._stop.is_set():
            added = inbound.sync_account(account_id, session=session)
            db.session.remove()
            if added is None:
                if not _watchable(account_id):
                    return
                # A cron sync holds the lease; look again after a poll period.
                self._stop.wait(self.poll_seconds)
            elif idle:
                session.idle(IDLE_SECONDS, self._stop.is_set)
            else:
                self._stop.wait(self.poll_seconds)


def _settings(account_id: int):
    """Return the IMAP settings of a watchable account, or None."""
    account = db.session.get(EmailAccount, account_id)
    settings = accounts.imap_settings(account) if _is_watchable(account) else None
    db.session.commit()
    return settings


def _watchable(account_id: int) -> bool:
    watchable = _is_watchable(db.session.get(EmailAccount, account_id))
    db.session.commit()
    return watchable


def _is_watchable(account: EmailAccount | None) -> bool:
    return (
        account is not None
        and account.kind == AccountKind.IMAP
        and account.status == AccountStatus.ACTIVE
    )
