"""Build outgoing messages as RFC 5322 bytes ready for SMTP."""

import base64
import binascii
import email.utils
import logging
import mimetypes
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

from posta.mail.threads import strip_subject_prefixes

logger = logging.getLogger(__name__)

# CRLF line ends and RFC 2047/2231 encoding of non-ASCII headers and filenames;
# 7-bit bodies (quoted-printable/base64) so no server needs 8BITMIME.
_POLICY = policy.SMTP.clone(cte_type="7bit")
_MANAGED_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "thread-index",
    "thread-topic",
}
# FILETIME counts 100 ns ticks since 1601-01-01 UTC.
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_THREAD_INDEX_HEADER = 22
_THREAD_INDEX_CHILD = 5


@dataclass
class OutgoingAttachment:
    """A file to attach, read from disk when the message is built."""

    filename: str
    content_type: str
    path: str


@dataclass(kw_only=True)
class OutgoingMail:
    """Everything needed to build one outgoing message."""

    from_addr: str
    from_name: str = ""
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str
    text: str
    html: str | None = None
    message_id: str
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[OutgoingAttachment] = field(default_factory=list)
    date: datetime | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    thread_index: str | None = None


def make_message_id(domain: str) -> str:
    """Return a new globally unique Message-ID such as "<random@domain>"."""
    return f"<{secrets.token_urlsafe(24)}@{domain.strip().lower()}>"


def thread_index(parent: str | None, now: datetime | None = None) -> str:
    """Return a base64 Outlook Thread-Index: a new one, or `parent`'s next reply.

    Layout per MS-OXOMSG 2.2.1.3 (PidTagConversationIndex): a 22-byte header
    (0x01, the 40 high bits of a FILETIME, a random GUID) and one 5-byte child
    block per reply (delta code, 31 bits of time since the header, random).
    A parent that is not a valid index starts a new conversation.
    """
    ticks = _filetime(now or datetime.now(UTC))
    parent_bytes = _decode_thread_index(parent)
    if parent_bytes is None:
        header = b"\x01" + (ticks >> 24).to_bytes(5, "big") + os.urandom(16)
        return base64.b64encode(header).decode("ascii")
    delta = max(ticks - _header_ticks(parent_bytes), 0)
    # Deltas under about 1.7 years keep finer resolution (delta code 0).
    if delta & 0x00FE_0000_0000_0000 == 0:
        block = (delta >> 18) & 0x7FFF_FFFF
    else:
        block = 0x8000_0000 | ((delta >> 23) & 0x7FFF_FFFF)
    child = block.to_bytes(4, "big") + os.urandom(1)
    return base64.b64encode(parent_bytes + child).decode("ascii")


def _filetime(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elapsed = moment - _FILETIME_EPOCH
    return (elapsed.days * 86_400 + elapsed.seconds) * 10_000_000 + (
        elapsed.microseconds * 10
    )


def _decode_thread_index(value: str | None) -> bytes | None:
    try:
        data = base64.b64decode("".join((value or "").split()), validate=True)
    except binascii.Error:
        return None
    size = len(data)
    if size < _THREAD_INDEX_HEADER or (size - _THREAD_INDEX_HEADER) % 5:
        return None
    return data


def _header_ticks(index: bytes) -> int:
    """Return the FILETIME an index header was made at.

    Current Exchange and Outlook write 0x01 then FILETIME >> 24; older Outlook
    wrote the six high bytes of FILETIME (FILETIME >> 16), whose first byte is
    also 0x01 today. A second byte of 0x01 can only be the newer layout.
    """
    if index[1] == 0x01:
        return int.from_bytes(index[1:6], "big") << 24
    return int.from_bytes(index[0:6], "big") << 16


def recipients(mail: OutgoingMail) -> list[str]:
    """Return the envelope recipients (To, Cc and Bcc), deduplicated in order."""
    seen: dict[str, str] = {}
    for _, addr in email.utils.getaddresses([*mail.to, *mail.cc, *mail.bcc]):
        if addr:
            seen.setdefault(addr.lower(), addr)
    return list(seen.values())


def build_message(mail: OutgoingMail) -> bytes:
    """Render the mail as bytes; Bcc goes only into the envelope, never a header."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(display_name=mail.from_name or "", addr_spec=mail.from_addr)
    msg["To"] = _addresses(mail.to)
    if mail.cc:
        msg["Cc"] = _addresses(mail.cc)
    msg["Subject"] = mail.subject
    msg["Date"] = email.utils.format_datetime(mail.date or datetime.now(UTC))
    msg["Message-ID"] = mail.message_id
    if mail.in_reply_to:
        msg["In-Reply-To"] = mail.in_reply_to
    if mail.references:
        msg["References"] = " ".join(mail.references)
    if mail.thread_index:
        # Outlook groups a conversation by these two, not by References.
        msg["Thread-Index"] = mail.thread_index
        msg["Thread-Topic"] = strip_subject_prefixes(mail.subject) or mail.subject
    for name, value in mail.extra_headers.items():
        if name.lower() in _MANAGED_HEADERS:
            raise ValueError(f"extra_headers may not set {name}")
        msg[name] = value
    _set_body(msg, mail)
    return msg.as_bytes()


def _addresses(values: list[str]) -> list[Address]:
    """Parse "Name <addr>" or bare address strings into header Address objects."""
    return [
        Address(display_name=name, addr_spec=addr)
        for name, addr in email.utils.getaddresses(values)
        if addr
    ]


def _set_body(msg: EmailMessage, mail: OutgoingMail) -> None:
    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    for attachment in mail.attachments:
        maintype, subtype = _split_type(attachment)
        msg.add_attachment(
            Path(attachment.path).read_bytes(),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )


def _split_type(attachment: OutgoingAttachment) -> tuple[str, str]:
    content_type = (
        attachment.content_type or mimetypes.guess_type(attachment.filename)[0]
    )
    if not content_type or "/" not in content_type:
        return "application", "octet-stream"
    maintype, subtype = content_type.split("/", 1)
    return maintype, subtype.split(";")[0].strip()
