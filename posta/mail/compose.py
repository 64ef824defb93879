"""Build outgoing messages as RFC 5322 bytes ready for SMTP."""

import email.utils
import logging
import mimetypes
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

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
}


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


def make_message_id(domain: str) -> str:
    """Return a new globally unique Message-ID such as "<random@domain>"."""
    return f"<{secrets.token_urlsafe(24)}@{domain.strip().lower()}>"


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
