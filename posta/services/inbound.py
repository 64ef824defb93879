"""Bring replies into their tasks: sync an account's INBOX, keep what threads.

The IMAP session runs outside any database transaction; each batch the mail
core yields is written in one short transaction (messages, files, cursor), so
a crash loses at most one batch, which the next run fetches again.

Which task a message belongs to is decided once, from its headers, with one
query per header batch (`_Threading`); storing reuses that answer.

Large messages reach us parsed from spool files (posta/mail/sync.py), their
large attachments already decoded into files in the spool folder under the
attachments folder; storing renames those files into storage instead of
writing bytes. Whatever a batch leaves in the spool (messages skipped, a batch
rolled back) is removed when the batch ends.
"""

import logging
from datetime import timedelta
from email.utils import formataddr

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from sqlalchemy import insert, select, update

from posta.extensions import db
from posta.mail.errors import AuthError, FolderGone, MailError
from posta.mail.imap import ImapSession
from posta.mail.parse import ParsedMessage
from posta.mail.sync import FolderState, SyncBatch, spooled_paths, sync_folder
from posta.mail.threads import reference_ids
from posta.models import (
    AccountStatus,
    Attachment,
    Direction,
    EmailAccount,
    MailFolder,
    Message,
    utcnow,
)
from posta.services import accounts, linking, storage

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


def sync_account(account_id: int, session: ImapSession | None = None) -> int | None:
    """Import new replies of one account; return how many, or None if skipped.

    With `session`, the pass runs in that open IMAP session (the watcher's)
    instead of a connection of its own.
    """
    until = utcnow() + timedelta(seconds=current_app.config["POSTA_SYNC_LEASE_SECONDS"])
    acquired = EmailAccount.acquire_sync_lease(account_id, until)
    db.session.commit()
    if not acquired:
        logger.info("account %s: another sync holds the lease; skipped", account_id)
        return None
    logger.info("account %s: sync started", account_id)
    account = db.session.get(EmailAccount, account_id)
    if account is None or account.status != AccountStatus.ACTIVE:
        _release(account_id)
        return None
    added = 0
    error = None
    try:
        settings = accounts.imap_settings(account)
        address = account.email
        folders = current_app.config["POSTA_SYNC_FOLDERS"]
        states = {name: _load_state(account_id, name) for name in folders}
        # The IMAP session must not hold a database transaction open.
        db.session.commit()
        added, error = _sync_folders(account_id, address, settings, states, session)
    except Exception:
        db.session.rollback()
        error = str(_l("The sync failed unexpectedly; it will be tried again."))
        raise
    finally:
        _finish(account_id, added, error)
    return added


def _sync_folders(
    account_id, address, settings, states, session
) -> tuple[int, str | None]:
    """Run the mail core over each folder; return (messages added, account error)."""
    added = 0
    try:
        if session is not None:
            added = _sync_session(account_id, session, states)
        else:
            with ImapSession(settings) as opened:
                added = _sync_session(account_id, opened, states)
    except AuthError as exc:
        logger.warning("account %s: login refused", account_id)
        return added, accounts.auth_failure_text(exc, address, settings.host)
    except MailError as exc:
        logger.warning("account %s: sync failed: %s", account_id, exc.kind)
        return added, exc.detail
    return added, None


def _sync_session(account_id: int, session: ImapSession, states) -> int:
    """Sync each folder in an open session; return how many messages were added."""
    added = 0
    storage.sweep_spool()
    spool = storage.spool_dir()
    for name, state in states.items():
        threading = _Threading(account_id)
        try:
            for batch in sync_folder(
                session, state, threading.wanted, BATCH_SIZE, spool_dir=spool
            ):
                added += _store_batch(account_id, name, batch, threading)
        except FolderGone as exc:
            logger.warning("account %s folder %s: gone", account_id, name)
            _folder_error(account_id, name, exc.detail)
    return added


class _Threading:
    """Which new messages of one folder pass thread into tasks, and into which."""

    def __init__(self, account_id: int):
        self.account_id = account_id
        self._task_of_uid: dict[int, int] = {}
        # Messages picked earlier in this pass: a reply to a reply that is not
        # stored yet (same or previous batch) still finds its task.
        self._picked_ids: dict[str, int] = {}
        self.links = linking.InboundLinks()

    def wanted(self, headers) -> set[int]:
        """Return the UIDs whose references lead to a task, with one query."""
        refs = {h.uid: reference_ids(h.in_reply_to, h.references) for h in headers}
        with db.session.no_autoflush:
            known = Message.tasks_by_message_id(
                {ref for ids in refs.values() for ref in ids}
            )
            self.links.prepare(headers)
        db.session.commit()
        for header in sorted(headers, key=lambda h: h.uid):
            task_id = next(
                (
                    known.get(ref) or self._picked_ids.get(ref)
                    for ref in refs[header.uid]
                    if ref in known or ref in self._picked_ids
                ),
                None,
            )
            if task_id is None:
                task_id = self.links.fallback(header)
            if task_id is None:
                continue
            self._task_of_uid[header.uid] = task_id
            if header.message_id:
                self._picked_ids.setdefault(header.message_id, task_id)
        logger.debug(
            "account %s: %d of %d headers belong to tasks",
            self.account_id,
            sum(1 for h in headers if h.uid in self._task_of_uid),
            len(headers),
        )
        return {h.uid for h in headers if h.uid in self._task_of_uid}

    def task_of(self, uid: int) -> int | None:
        """Return the task that `wanted` found for a UID, forgetting it."""
        return self._task_of_uid.pop(uid, None)


def _store_batch(
    account_id: int, folder: str, batch: SyncBatch, threading: _Threading
) -> int:
    """Write one batch's messages, files and folder cursor in one transaction."""
    stored_files = []
    try:
        with db.session.no_autoflush:
            seen = set(
                db.session.scalars(
                    select(Message.dedupe_key).where(
                        Message.account_id == account_id,
                        Message.dedupe_key.in_(
                            [parsed.dedupe_key for _, parsed in batch.messages]
                        ),
                    )
                )
            )
        rows, files = [], []
        for uid, parsed in batch.messages:
            link = threading.links.confirm(uid, parsed, threading.task_of(uid))
            if parsed.dedupe_key in seen or link is None:
                continue
            seen.add(parsed.dedupe_key)
            linking.apply_bounce(parsed)
            rows.append(
                _message_row(account_id, folder, uid, link.task_id, parsed)
                | linking.columns(parsed, link)
            )
            files.append(_attachment_rows(parsed, stored_files))
        if rows:
            db.session.execute(insert(Message), rows)
            _insert_attachments(account_id, rows, files)
        _save_state(account_id, batch.state)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.delete(stored_files)
        raise
    finally:
        # Spool files not moved into storage: skipped messages, or all of a
        # failed batch's. Moved ones are gone from the spool already.
        storage.discard(spooled_paths(parsed for _, parsed in batch.messages))
    logger.info(
        "account %s folder %s: %d new messages up to uid %s",
        account_id,
        folder,
        len(rows),
        batch.state.last_uid,
    )
    return len(rows)


def _insert_attachments(account_id: int, rows, files) -> None:
    """Insert the attachment rows of just-inserted messages, found by dedupe key."""
    with_files = {row["dedupe_key"]: f for row, f in zip(rows, files, strict=True) if f}
    if not with_files:
        return
    # One executemany without RETURNING: SQLite would insert row by row to keep
    # the returned ids in order. (account, dedupe key) is unique, so ask for them.
    ids = db.session.execute(
        select(Message.dedupe_key, Message.id).where(
            Message.account_id == account_id, Message.dedupe_key.in_(with_files)
        )
    ).all()
    db.session.execute(
        insert(Attachment),
        [{**f, "message_id": id_} for key, id_ in ids for f in with_files[key]],
    )


def _attachment_rows(parsed: ParsedMessage, stored_files: list[str]) -> list[dict]:
    """Write a message's attachments to storage; return their rows' values."""
    rows = []
    for part in parsed.attachments:
        if part.path:
            key = storage.adopt_file(part.path)
            size = part.size
        else:
            key = storage.save_bytes(part.data)
            size = len(part.data)
        stored_files.append(key)
        rows.append(
            {
                "filename": part.filename[:255] or "attachment",
                "content_type": part.content_type[:255],
                "size": size,
                "storage_key": key,
                "content_id": part.content_id,
                "inline": part.inline,
            }
        )
    return rows


def _message_row(account_id, folder, uid, task_id, parsed: ParsedMessage) -> dict:
    """Return the values of a received message's row, for a bulk insert."""
    return {
        "account_id": account_id,
        "task_id": task_id,
        "direction": Direction.IN.value,
        "message_id": parsed.message_id,
        "dedupe_key": parsed.dedupe_key,
        "in_reply_to": parsed.in_reply_to,
        "references": " ".join(parsed.references),
        "subject": parsed.subject[:998],
        "from_addr": (parsed.from_addr or "")[:254],
        "from_name": parsed.from_name[:254],
        "to_addrs": _join(parsed.to),
        "cc_addrs": _join(parsed.cc),
        "text_body": parsed.text,
        "html_body": parsed.html,
        "sent_date": parsed.date,
        "folder": folder,
        "uid": uid,
        "defects": "\n".join(parsed.defects),
    }


def _load_state(account_id: int, name: str) -> FolderState:
    row = _folder_row(account_id, name)
    if row is None:
        return FolderState(name=name, uidvalidity=None, last_uid=0, uidnext=None)
    return FolderState(
        name=name,
        uidvalidity=row.uidvalidity,
        last_uid=row.last_uid,
        uidnext=row.uidnext,
    )


def _save_state(account_id: int, state: FolderState) -> None:
    row = _folder_row(account_id, state.name) or MailFolder(
        account_id=account_id, name=state.name
    )
    row.uidvalidity = state.uidvalidity
    row.uidnext = state.uidnext
    row.last_uid = state.last_uid
    row.last_error = None
    row.last_synced_at = utcnow()
    db.session.add(row)


def _folder_error(account_id: int, name: str, detail: str) -> None:
    row = _folder_row(account_id, name) or MailFolder(account_id=account_id, name=name)
    row.last_error = detail[:500]
    db.session.add(row)
    db.session.commit()


def _folder_row(account_id: int, name: str) -> MailFolder | None:
    return db.session.scalars(
        select(MailFolder).where(
            MailFolder.account_id == account_id, MailFolder.name == name
        )
    ).first()


def _finish(account_id: int, added: int, error: str | None) -> None:
    """Record the outcome on the account and release its sync lease."""
    result = ngettext("%(num)d new message", "%(num)d new messages", added)
    if error:
        # A failed pass must not read like a quiet success on the settings page.
        result = ngettext(
            "Failed after %(num)d new message",
            "Failed after %(num)d new messages",
            added,
        )
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(
            sync_lease_until=None,
            last_sync_at=utcnow(),
            last_sync_result=result,
            last_error=error[:500] if error else None,
        )
    )
    db.session.commit()
    logger.info(
        "account %s: sync finished, %d new%s",
        account_id,
        added,
        "; failed" if error else "",
    )


def _release(account_id: int) -> None:
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(sync_lease_until=None)
    )
    db.session.commit()


def _join(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(formataddr(pair) for pair in pairs)
