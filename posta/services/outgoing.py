"""The outgoing queue: Message rows are the queue, RQ jobs only nudge it.

A message moves queued -> sending -> sent | failed. Every move is a conditional
UPDATE committed before any network I/O, so two workers (or two Retry clicks)
can never both send the same row.

A nudge drains: the job sends its message, then claims and sends the account's
other queued messages one by one over the same SMTP connection, so a burst of
sends costs one login rather than one per message. The nudges of messages it
sent find nothing to claim and end at once.
"""

import email.utils
import logging
import time
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload, selectinload
from werkzeug.datastructures import FileStorage

from posta import queue
from posta.extensions import db
from posta.ids import parse_id
from posta.mail import compose
from posta.mail import smtp as smtp_adapter
from posta.mail.errors import (
    AmbiguousSendError,
    AuthError,
    MailError,
    PermanentSendError,
)
from posta.models import (
    AccountKind,
    Attachment,
    Direction,
    EmailAccount,
    Message,
    SendStatus,
    Task,
    User,
    Workspace,
    utcnow,
)
from posta.services import (
    accounts,
    graph_sync,
    linking,
    permissions,
    plans,
    signatures,
    storage,
)

logger = logging.getLogger(__name__)

# A nudge older than this without a worker picking it up is presumed lost.
LOST_NUDGE_AFTER = timedelta(minutes=1)
# How long a send may stay "sending" before the sweeper calls it interrupted.
DEFAULT_SEND_LEASE_SECONDS = 600
# A drain hands over to a new job after this long, well inside the job timeout.
DRAIN_SECONDS = 120
# Keep References bounded, as mail clients do, while keeping the thread root.
MAX_REFERENCES = 20
INTERRUPTED = (
    "Sending was interrupted; it may have been delivered. Check the Sent folder "
    "before retrying."
)


class OutgoingError(ValueError):
    """A send that cannot be queued or retried, with a message for the person."""


def queue_send(
    user: User,
    task: Task,
    account_id,
    to: str,
    cc: str,
    bcc: str,
    subject: str,
    body: str,
    attachments: list[FileStorage],
    signature_id=None,
) -> Message:
    """Store a new outgoing message on the task, then nudge a worker to send it."""
    account_id = _int_or_none(account_id)
    account = db.session.get(EmailAccount, account_id) if account_id else None
    refusal = permissions.send_refusal(user, account)
    workspace = Workspace.get()
    refusal = refusal or permissions.uses_refusal(workspace)
    if refusal:
        raise OutgoingError(refusal)
    to_list, cc_list, bcc_list = (parse_addresses(v) for v in (to, cc, bcc))
    if not (to_list or cc_list or bcc_list):
        raise OutgoingError(_l("Add at least one recipient."))
    files = [f for f in attachments if f and f.filename]
    body = (body or "").strip()
    if not body and not files:
        raise OutgoingError(_l("Write a message or attach a file."))
    try:
        signature = signatures.for_sending(account, _int_or_none(signature_id))
    except signatures.SignatureError as exc:
        raise OutgoingError(exc.message) from exc
    text_body, html_body = signatures.signed(body, signature)

    parent = _latest_on_task(task.id)
    domain = account.email.rpartition("@")[2]
    message_id = compose.make_message_id(domain)
    message = Message(
        account_id=account.id,
        task_id=task.id,
        direction=Direction.OUT.value,
        message_id=message_id,
        dedupe_key=message_id,
        in_reply_to=parent.message_id if parent is not None else None,
        references=" ".join(_thread_references(parent)),
        subject=linking.tagged_subject(subject, task),
        thread_index=linking.next_thread_index(parent),
        from_addr=account.email,
        from_name=account.display_name or user.name,
        to_addrs=", ".join(to_list),
        cc_addrs=", ".join(cc_list),
        bcc_addrs=", ".join(bcc_list),
        text_body=text_body,
        html_body=html_body,
        status=SendStatus.QUEUED.value,
        counted_use=True,
        created_by_id=user.id,
    )
    stored = []
    try:
        budget = storage.max_upload_bytes()
        for upload in files:
            key, size = storage.save_stream(upload.stream, budget)
            stored.append(key)
            budget -= size
            message.attachments.append(
                Attachment(
                    filename=_safe_filename(upload.filename),
                    content_type=upload.mimetype or "application/octet-stream",
                    size=size,
                    storage_key=key,
                )
            )
        db.session.add(message)
        # The use is taken in the transaction that stores the message.
        if not plans.take_use(workspace):
            raise OutgoingError(permissions.uses_exhausted_reason(workspace))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.delete(stored)
        raise
    logger.info(
        "message %s queued on task %s from account %s by user %s",
        message.id,
        task.id,
        account.id,
        user.id,
    )
    _nudge(message.id)
    return message


def retry(user: User, message_id: int) -> Message:
    """Put a failed message back in the queue, once, however often it is asked."""
    message = db.session.get(Message, message_id)
    if message is None or message.direction != Direction.OUT:
        raise OutgoingError(_l("That message does not exist."))
    refusal = permissions.send_refusal(user, message.account)
    if refusal:
        raise OutgoingError(refusal)
    workspace = Workspace.get()
    result = db.session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == SendStatus.FAILED)
        .values(
            status=SendStatus.QUEUED.value,
            error=None,
            claimed_at=None,
            counted_use=True,
        )
    )
    if result.rowcount != 1:
        db.session.rollback()
        raise OutgoingError(_l("This message is already queued, sending or sent."))
    # A failed message gave its use back; sending it again takes one.
    if not plans.take_use(workspace):
        db.session.rollback()
        raise OutgoingError(permissions.uses_exhausted_reason(workspace))
    db.session.commit()
    logger.info("message %s re-queued by user %s", message_id, user.id)
    _nudge(message_id)
    db.session.refresh(message)
    return message


def deliver(message_id: int) -> None:
    """Send a queued message, then the account's other queued ones on one connection."""
    account_id = db.session.scalar(
        select(Message.account_id).where(Message.id == message_id)
    )
    db.session.commit()
    deadline = time.monotonic() + DRAIN_SECONDS
    with _Sender() as sender:
        if _claim(message_id):
            sender.deliver(message_id)
        else:
            logger.info("message %s is not queued; another worker has it", message_id)
        if account_id is None:
            return
        while time.monotonic() < deadline:
            claimed = _claim_next(account_id)
            if claimed is None:
                return
            sender.deliver(claimed)
    _nudge_next(account_id)


def _claim(message_id: int) -> bool:
    """Move a message from queued to sending; False when someone else has it."""
    claimed = db.session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == SendStatus.QUEUED)
        .values(
            status=SendStatus.SENDING.value,
            claimed_at=utcnow(),
            attempts=Message.attempts + 1,
        )
    )
    db.session.commit()
    return claimed.rowcount == 1


def _claim_next(account_id: int) -> int | None:
    """Claim the account's oldest queued message; return its id, or None."""
    while True:
        candidate = db.session.scalar(_queued(account_id).limit(1))
        if candidate is None:
            db.session.commit()
            return None
        # Lost to another worker: that row is no longer queued; try the next.
        if _claim(candidate):
            return candidate


def _nudge_next(account_id: int) -> None:
    """Hand the rest of a long drain to a new job."""
    waiting = db.session.scalar(_queued(account_id).limit(1))
    db.session.commit()
    if waiting is not None:
        logger.info("account %s: drain hands over at message %s", account_id, waiting)
        _nudge(waiting)


def _queued(account_id: int):
    return (
        select(Message.id)
        .where(
            Message.account_id == account_id,
            Message.direction == Direction.OUT,
            Message.status == SendStatus.QUEUED,
        )
        .order_by(Message.id)
    )


class _Sender:
    """Deliver claimed messages, keeping one SMTP connection open between them."""

    def __init__(self):
        self._connection: smtp_adapter.SmtpConnection | None = None
        self._account_id: int | None = None

    def __enter__(self) -> "_Sender":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close()

    def deliver(self, message_id: int) -> None:
        """Send a message this worker claimed and record the outcome."""
        # One query for what the send reads, instead of a lazy load for each.
        message = db.session.get(
            Message,
            message_id,
            options=[
                joinedload(Message.account),
                joinedload(Message.created_by),
                selectinload(Message.attachments),
            ],
        )
        account = message.account
        if account is None:
            _finish(
                message_id, SendStatus.FAILED, "The email account was disconnected."
            )
            return
        # The rules may have changed since the message was queued.
        refusal = permissions.delivery_refusal(message.created_by, account)
        if refusal:
            _finish(message_id, SendStatus.FAILED, str(refusal))
            return
        if account.kind == AccountKind.GRAPH:
            _deliver_graph(message, account)
            return
        account_id = account.id
        try:
            settings = accounts.smtp_settings(account)
        except ValueError:
            # The encryption key changed since the account was connected.
            _finish(
                message_id,
                SendStatus.FAILED,
                "The saved password cannot be read; connect the account again.",
            )
            return
        mail = _outgoing_mail(message)
        envelope_from = account.email
        # Build before letting go of the rows: attachments are read from disk here.
        raw = compose.build_message(mail)
        rcpts = compose.recipients(mail)
        # No transaction stays open while the SMTP server talks.
        db.session.commit()

        try:
            self._send(account_id, settings, envelope_from, rcpts, raw)
        except AmbiguousSendError as exc:
            reason = (
                "The connection broke after the message went out; it may have been "
                f"delivered. Check the Sent folder before retrying. ({exc.detail})"
            )
            _finish(message_id, SendStatus.FAILED, reason)
        except AuthError as exc:
            reason = accounts.auth_failure_text(exc, envelope_from, settings.host)
            _finish(message_id, SendStatus.FAILED, f"{reason} ({exc.detail})")
        except MailError as exc:
            _finish(message_id, SendStatus.FAILED, exc.detail)
        else:
            _finish(message_id, SendStatus.SENT, None)

    def _send(self, account_id, settings, envelope_from, rcpts, raw) -> None:
        """Send on the open connection; once more on a fresh one if it went stale."""
        reused = self._account_id == account_id and self._connection is not None
        try:
            self._open(account_id, settings).send(envelope_from, rcpts, raw)
            return
        except (AmbiguousSendError, PermanentSendError):
            self._close()
            raise
        except MailError:
            self._close()
            # A server may drop a connection between messages (idle timeout, a
            # limit per connection); nothing of this one was accepted, so one
            # more try on a fresh connection cannot send it twice.
            if not reused:
                raise
        logger.info("account %s: SMTP connection dropped; reconnecting", account_id)
        try:
            self._open(account_id, settings).send(envelope_from, rcpts, raw)
        except MailError:
            self._close()
            raise

    def _open(self, account_id: int, settings) -> smtp_adapter.SmtpConnection:
        if self._account_id != account_id:
            self._close()
        if self._connection is None:
            connection = smtp_adapter.SmtpConnection(settings)
            self._connection = connection.__enter__()
            self._account_id = account_id
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.__exit__(None, None, None)
        self._connection = None
        self._account_id = None


def _deliver_graph(message: Message, account: EmailAccount) -> None:
    """Send a claimed message through Microsoft Graph; keep its ids for threading."""
    message_id = message.id
    mail = _outgoing_mail(message)
    reply_to = graph_sync.reply_target(message)
    # Attachments are read and rows let go of before Microsoft is called.
    db.session.commit()
    error, sent = graph_sync.send(account, mail, reply_to)
    if sent is None:
        _finish(message_id, SendStatus.FAILED, error)
    else:
        _finish(
            message_id,
            SendStatus.SENT,
            None,
            remote_id=sent.message_id,
            conversation_id=sent.conversation_id,
        )


def sweep() -> None:
    """Re-nudge queued rows whose nudge was lost; fail sends stuck past the lease."""
    now = utcnow()
    lease = current_app.config.get(
        "POSTA_SEND_LEASE_SECONDS", DEFAULT_SEND_LEASE_SECONDS
    )
    stuck = db.session.execute(
        update(Message)
        .where(
            Message.direction == Direction.OUT,
            Message.status == SendStatus.SENDING,
            Message.claimed_at < now - timedelta(seconds=lease),
        )
        .values(status=SendStatus.FAILED.value, error=INTERRUPTED)
    )
    plans.release_failed_uses()
    waiting = db.session.scalars(
        select(Message.id)
        .where(
            Message.direction == Direction.OUT,
            Message.status == SendStatus.QUEUED,
            Message.created_at < now - LOST_NUDGE_AFTER,
        )
        .order_by(Message.id)
    ).all()
    db.session.commit()
    if stuck.rowcount or waiting:
        logger.info(
            "sweep: %d interrupted sends failed, %d queued sends re-nudged",
            stuck.rowcount,
            len(waiting),
        )
    for message_id in waiting:
        _nudge(message_id)


def parse_addresses(value: str | None) -> list[str]:
    """Split a comma-separated recipient field into checked "Name <addr>" strings."""
    result = []
    for name, addr in email.utils.getaddresses([(value or "").replace(";", ",")]):
        if not addr and not name:
            continue
        try:
            addr = validate_email(
                addr,
                check_deliverability=False,
                globally_deliverable=False,
                test_environment=True,
            ).normalized
        except EmailNotValidError as exc:
            raise OutgoingError(
                _l("“%(address)s” is not a valid email address.", address=addr or name)
            ) from exc
        result.append(email.utils.formataddr((name, addr)))
    return result


def _thread_references(parent: Message | None) -> list[str]:
    """Return the References of a reply to `parent`: its chain plus its own id."""
    if parent is None:
        return []
    chain = parent.references.split() + [parent.message_id]
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return chain


def _latest_on_task(task_id: int) -> Message | None:
    return db.session.scalars(
        select(Message)
        .where(Message.task_id == task_id, Message.message_id.is_not(None))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    ).first()


def _outgoing_mail(message: Message) -> compose.OutgoingMail:
    return compose.OutgoingMail(
        from_addr=message.from_addr,
        from_name=message.from_name,
        to=_split(message.to_addrs),
        cc=_split(message.cc_addrs),
        bcc=_split(message.bcc_addrs),
        subject=message.subject,
        text=message.text_body,
        html=message.html_body,
        message_id=message.message_id,
        in_reply_to=message.in_reply_to,
        references=message.references.split(),
        attachments=[
            compose.OutgoingAttachment(
                filename=a.filename,
                content_type=a.content_type,
                path=storage.path_for(a.storage_key),
            )
            for a in message.attachments
        ],
        date=message.created_at,
        thread_index=message.thread_index,
    )


def _finish(message_id: int, status: SendStatus, error: str | None, **ids) -> None:
    """Record the outcome of a send that this worker holds (and any remote ids)."""
    values = {"status": status.value, "error": error[:500] if error else None, **ids}
    if status == SendStatus.SENT:
        values["sent_date"] = utcnow()
    # A send that outlived its lease was marked failed by the sweeper; the real
    # outcome is better than that guess, so "failed" may be overwritten too.
    db.session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.status.in_([SendStatus.SENDING, SendStatus.FAILED]),
        )
        .values(**values)
    )
    if status == SendStatus.SENT:
        plans.count_sent(message_id)
    else:
        plans.release_failed_uses()
    db.session.commit()
    logger.info(
        "message %s %s%s", message_id, status.value, f": {error}" if error else ""
    )


def _nudge(message_id: int) -> None:
    """Ask a worker to send; a lost nudge is recovered by the sweeper."""
    from posta import jobs

    try:
        queue.enqueue(jobs.send_message, message_id)
    except Exception:
        logger.exception("could not enqueue message %s; the sweeper will", message_id)


def _split(value: str) -> list[str]:
    pairs = email.utils.getaddresses([value or ""])
    return [email.utils.formataddr(pair) for pair in pairs if pair[1]]


def _safe_filename(name: str) -> str:
    # Keep the person's name (unicode included) but never a path.
    name = name.replace("\\", "/").rpartition("/")[2].strip()
    return name[:255] or "attachment"


def _int_or_none(value):
    return parse_id(value)
