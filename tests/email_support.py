"""Helpers for the Email tests: tasks, real mailboxes, connected accounts, replies."""

import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from posta.extensions import db
from posta.models import EmailAccount, Message, Task, TaskList, utcnow
from posta.services import accounts


@dataclass
class Mailbox:
    """One address with the same password on the test Dovecot and aiosmtpd."""

    address: str
    password: str
    dovecot: object
    smtp: object

    def form(self, **overrides) -> dict:
        data = {
            "email": self.address,
            "password": self.password,
            "imap_host": "127.0.0.1",
            "imap_port": str(self.dovecot.port),
            "imap_security": "none",
            "smtp_host": "127.0.0.1",
            "smtp_port": str(self.smtp.port),
            "smtp_security": "none",
        }
        data.update(overrides)
        return data


def make_mailbox(dovecot, smtp, local="member") -> Mailbox:
    password = secrets.token_urlsafe(12)
    address = dovecot.add_user(local, password)
    smtp.add_user(address, password)
    return Mailbox(address, password, dovecot, smtp)


def make_task(name="Quote for Rossi") -> Task:
    task_list = TaskList(name="Sales")
    task = Task(name=name, task_list=task_list)
    db.session.add_all([task_list, task])
    db.session.commit()
    return task


def connect(user, mailbox: Mailbox) -> EmailAccount:
    return accounts.connect_imap_account(user, mailbox.form())


def reply_to(
    parent_id: str,
    *,
    sender="rossi@client.test",
    to="member@posta.test",
    text="Thanks, the quote is fine.",
    html=None,
    attachments=(),
    message_id=None,
) -> bytes:
    """Build a reply to the message with Message-ID parent_id."""
    msg = EmailMessage()
    msg["From"] = f"Mario Rossi <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Re: Quote"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id or make_msgid(domain="client.test")
    if parent_id:
        msg["In-Reply-To"] = parent_id
        msg["References"] = parent_id
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def messages_on(task) -> list[Message]:
    db.session.expire_all()
    return db.session.scalars(
        db.select(Message).where(Message.task_id == task.id).order_by(Message.id)
    ).all()
