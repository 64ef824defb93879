"""Which task an email belongs to, and why; moving and splitting received mail.

A received message is linked, in this order, by the ids it replies to
(In-Reply-To, References), by the task tag Posta puts in every outgoing subject
("[T-42]") when that task exists, and for Graph mail by the Exchange
conversation of a message Posta sent. A bounce is linked to the task of the
message it returns, which it marks failed; it never causes a send.
"""

import logging
import re
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from posta.extensions import db
from posta.mail import compose
from posta.mail.autoreply import BOUNCE
from posta.mail.parse import ParsedMessage
from posta.mail.threads import (
    add_task_tag,
    find_task_tag,
    reference_ids,
    strip_subject_prefixes,
    task_tag,
)
from posta.models import Direction, Message, SendStatus, Task, TaskStatus, User

logger = logging.getLogger(__name__)

HEADER = "header"
TASK_TAG = "task_tag"
CONVERSATION = "conversation"
MOVED = "moved"
SPLIT = "split"

# A header-stage pick whose task only its body can tell: a bounce names the
# message it returns inside the report. Task ids start at 1.
PENDING = 0
# Senders of delivery reports (RFC 3464) and of Exchange's own notices.
_REPORT_SENDER = re.compile(
    r"^(?:mailer-daemon|postmaster|microsoftexchange[0-9a-f]*)@", re.IGNORECASE
)
_TASK_ID = re.compile(r"^\s*\[?\s*(?:T-)?(\d{1,12})\s*\]?\s*$", re.IGNORECASE)
TASK_NAME_MAX = 200


class LinkError(ValueError):
    """A move or split that cannot be done, with a message for the person."""


@dataclass
class Link:
    """The task a message goes to and the reason shown in the stream."""

    task_id: int
    reason: str


class InboundLinks:
    """Header-stage fallbacks and store-stage checks for one folder pass.

    The caller links by references first; `fallback` is asked only for headers
    that reference nothing Posta knows.
    """

    def __init__(self):
        self._tasks: set[int] = set()
        self._reasons: dict[int, str] = {}

    def prepare(self, headers) -> None:
        """Look up, in one query, the tasks that these subjects' tags name."""
        tags = {find_task_tag(h.subject) for h in headers} - {None}
        if tags:
            self._tasks |= set(
                db.session.scalars(select(Task.id).where(Task.id.in_(tags)))
            )

    def fallback(self, header) -> int | None:
        """Return the task of a header with no known references, PENDING, or None."""
        tagged = find_task_tag(header.subject)
        if tagged in self._tasks:
            self._reasons[header.uid] = TASK_TAG
            return tagged
        if _may_be_report(header):
            return PENDING
        return None

    def confirm(self, uid: int, parsed: ParsedMessage, task_id: int | None):
        """Return the Link of a fetched message, or None to leave it out."""
        reason = self._reasons.pop(uid, HEADER)
        if parsed.bounce and parsed.bounce.original_message_id:
            returned = _outgoing(parsed.bounce.original_message_id)
            if returned is not None and returned.task_id is not None:
                return Link(returned.task_id, HEADER)
        if not task_id:
            return None
        return Link(task_id, reason)


def _may_be_report(header) -> bool:
    """Tell whether a header looks like a delivery report worth reading."""
    content_type = (header.content_type or "").split(";")[0].strip().lower()
    return content_type == "multipart/report" or bool(
        header.from_addr and _REPORT_SENDER.match(header.from_addr)
    )


def columns(parsed: ParsedMessage, link: Link) -> dict:
    """Return the linking columns of a received message's row."""
    return {
        "link_reason": link.reason,
        "auto_kind": parsed.auto_kind,
        "thread_index": parsed.thread_index,
    }


def apply_bounce(parsed: ParsedMessage) -> bool:
    """Mark the sent message a bounce returns as failed; the caller commits."""
    bounce = parsed.bounce
    if parsed.auto_kind != BOUNCE or bounce is None or not bounce.original_message_id:
        return False
    detail = " ".join(p for p in (bounce.status, bounce.diagnostic) if p)
    reason = f"The recipient's server returned it ({', '.join(bounce.recipients)})"
    reason = f"{reason}: {detail}" if detail else reason
    # Only a delivered message: a retry someone queued since then stays queued.
    result = db.session.execute(
        update(Message)
        .where(
            Message.message_id == bounce.original_message_id,
            Message.direction == Direction.OUT,
            Message.status == SendStatus.SENT,
        )
        .values(status=SendStatus.FAILED.value, error=reason[:500])
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        logger.info("bounce for %s: marked failed", bounce.original_message_id)
    return bool(result.rowcount)


def graph_link(account_id: int, message) -> Link | None:
    """Return the Link of a Graph message: references, task tag, conversation."""
    task_id = Message.task_for_references(
        reference_ids(message.in_reply_to, message.references)
    )
    if task_id is not None:
        return Link(task_id, HEADER)
    tagged = find_task_tag(message.subject)
    if tagged is not None and db.session.get(Task, tagged) is not None:
        return Link(tagged, TASK_TAG)
    task_id = Message.task_for_conversation(account_id, message.conversation_id)
    return Link(task_id, CONVERSATION) if task_id is not None else None


def tagged_subject(subject: str, task: Task) -> str:
    """Return an outgoing subject (the task's name when empty) with its task tag."""
    return add_task_tag((subject or "").strip() or task.name, task.id)


def next_thread_index(parent: Message | None) -> str:
    """Return the Thread-Index of a reply to `parent`, or of a new conversation."""
    return compose.thread_index(parent.thread_index if parent is not None else None)


def move_targets(limit: int) -> list[Task]:
    """Return the most recently updated open tasks, to offer as move targets."""
    return db.session.scalars(
        select(Task)
        .where(Task.status != TaskStatus.DONE)
        .order_by(Task.updated_at.desc(), Task.id.desc())
        .limit(limit)
    ).all()


def move(user: User, message_id: int, target: str) -> Message:
    """Move a received message to the task `target` names ("42", "T-42")."""
    message = _received(message_id)
    found = _TASK_ID.match(target or "")
    task = db.session.get(Task, int(found.group(1))) if found else None
    if task is None:
        raise LinkError(_l("Choose a task, or enter a task number such as T-42."))
    if task.id == message.task_id:
        raise LinkError(_l("The email is already on that task."))
    _relink(message, task, MOVED, user)
    db.session.commit()
    logger.info("message %s moved to task %s by user %s", message.id, task.id, user.id)
    return message


def split(user: User, message_id: int) -> Task:
    """Make a new task in the same list from a received message, and move it there."""
    message = _received(message_id)
    task = Task(
        list_id=message.task.list_id,
        name=split_name(message),
        created_by=user,
    )
    db.session.add(task)
    _relink(message, task, SPLIT, user)
    db.session.commit()
    logger.info(
        "message %s split into task %s by user %s", message.id, task.id, user.id
    )
    return task


def split_name(message: Message) -> str:
    """Return a task name from a subject, without prefixes and task tags."""
    name = message.subject or ""
    while (tagged := find_task_tag(name)) is not None:
        name = re.sub(re.escape(task_tag(tagged)), " ", name, flags=re.IGNORECASE)
    name = strip_subject_prefixes(name)
    if not name:
        name = str(
            _l("Email from %(sender)s", sender=message.from_name or message.from_addr)
        )
    return name[:TASK_NAME_MAX]


def _received(message_id: int) -> Message:
    message = db.session.get(Message, message_id)
    if message is None or message.task_id is None:
        raise LinkError(_l("That email does not exist."))
    if message.direction != Direction.IN:
        raise LinkError(_l("Only received emails can be moved."))
    return message


def _relink(message: Message, task: Task, reason: str, user: User) -> None:
    message.task = task
    message.link_reason = reason
    message.linked_by = user


def _outgoing(message_id: str) -> Message | None:
    return db.session.scalars(
        select(Message)
        .where(Message.message_id == message_id, Message.direction == Direction.OUT)
        .limit(1)
    ).first()
