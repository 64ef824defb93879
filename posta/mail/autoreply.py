"""Recognize machine-sent mail: auto-replies, rule loops and bounces (DSNs)."""

import binascii
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from posta.mail.headers import decode_bytes, raw_header
from posta.mail.threads import normalize_message_id

logger = logging.getLogger(__name__)

AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"

_AUTO_REPLY_PRECEDENCE = {"bulk", "junk", "auto_reply"}
_AUTO_REPLY_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponder",
    "X-MS-Exchange-Inbox-Rules-Loop",
)
# Subjects out-of-office and vacation responders put first, in the languages
# their users write; matched case-insensitively at the start.
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[ -]?reply|autoreply|auto response"
    r"|out of (?:the )?office|risposta automatica|automatische antwort"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica"
    r"|resposta autom[áa]tica|automatisch antwoord|autosvar|automatisk svar"
    r"|automaattinen vastaus|odpowied[zź] automatyczna|自动回复|自動回覆"
    r"|自動応答)\b",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(?:mailer-daemon|postmaster)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification \(failure\)|mail delivery failed"
    r"|returned mail|delivery failure|failure notice|nicht zustellbar"
    r"|non remis|non recapitabile",
    re.IGNORECASE,
)
_ENCODED = ("base64", "quoted-printable")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
# qmail ("<user@host>:") and Exim ("  user@host") list each failed address
# alone on its line.
_ADDRESS_LINE = re.compile(r"^\s*<?([^\s<>@:]+@[^\s<>:]+?)>?:?\s*$", re.MULTILINE)
_ID_IN_TEXT = re.compile(r"^message-id:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass
class BounceInfo:
    """What a delivery failure report says about the message it returns."""

    original_message_id: str | None = None
    recipients: list[str] = field(default_factory=list)
    status: str | None = None
    diagnostic: str | None = None


def bounce_info(msg: Message, subject: str, sender: str | None) -> BounceInfo | None:
    """Return the failure a bounce reports, or None when it is not a bounce."""
    if _is_report(msg, "delivery-status"):
        return _dsn_bounce(msg)
    # Non-standard bounces (old qmail, some appliances) are plain text from the
    # mailer daemon; the subject must agree so a postmaster's note is not one.
    if sender and _BOUNCE_SENDER.match(sender) and _BOUNCE_SUBJECT.search(subject):
        return _text_bounce(msg)
    return None


def _is_report(msg: Message, report_type: str | None = None) -> bool:
    if msg.get_content_type() != "multipart/report":
        return False
    if report_type is None:
        return True
    return str(msg.get_param("report-type") or "").lower() == report_type


def is_auto_reply(msg: Message, subject: str) -> bool:
    """Tell whether a responder, a rule or a report (not a person) sent this."""
    if _is_report(msg):
        return True
    # One pass over the header names spares a scan per header looked for.
    names = {name.lower() for name in msg.keys()}
    if "auto-submitted" in names:
        auto = (raw_header(msg, "Auto-Submitted") or "no").strip().lower()
        if auto.split(";")[0].strip() != "no":
            return True
    if "precedence" in names:
        precedence = (raw_header(msg, "Precedence") or "").strip().lower()
        if precedence in _AUTO_REPLY_PRECEDENCE:
            return True
    if any(name.lower() in names for name in _AUTO_REPLY_HEADERS):
        return True
    return bool(_AUTO_REPLY_SUBJECT.match(subject or ""))


def _dsn_bounce(msg: Message) -> BounceInfo | None:
    """Read a multipart/report DSN; only failed recipients make it a bounce."""
    info = BounceInfo()
    for part in _own_parts(msg):
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            _read_status_fields(part, info)
        elif info.original_message_id is None:
            info.original_message_id = _returned_id(part)
    return info if info.recipients else None


def _own_parts(msg: Message) -> Iterator[Message]:
    """Yield the parts of a report, not those of the message it returns."""
    yield msg
    if msg.is_multipart() and msg.get_content_maintype() != "message":
        for child in msg.get_payload():
            yield from _own_parts(child)


def _read_status_fields(part: Message, info: BounceInfo) -> None:
    """Collect the failed recipients of a message/delivery-status part."""
    for block in _status_blocks(part):
        action = (block.get("Action") or "").strip().lower()
        status = _STATUS.search(block.get("Status") or "")
        failed = action == "failed" or (status and status.group(1).startswith("5"))
        recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
        if not failed or not recipient:
            continue
        address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
        info.recipients.append(address)
        if status and info.status is None:
            info.status = status.group(1)
        diagnostic = block.get("Diagnostic-Code")
        if diagnostic and info.diagnostic is None:
            info.diagnostic = " ".join(diagnostic.split(";", 1)[-1].split())


def _status_blocks(part: Message) -> list[Message]:
    """Return the field blocks of a delivery-status part, however it was sent."""
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if isinstance(payload, list) and encoding not in _ENCODED:
        return [block for block in payload if isinstance(block, Message)]
    # The parser splits an encoded part into blocks too, with the encoded text
    # as their bodies; join it back and decode it first.
    if isinstance(payload, list):
        payload = "".join(str(block.get_payload()) for block in payload)
    text = _decode_transfer(str(payload), encoding)
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(block) for block in re.split(r"\r?\n\s*\r?\n", text)]


def _decode_transfer(text: str, encoding: str) -> str:
    data = text.encode("ascii", "surrogateescape")
    if encoding == "base64":
        data = binascii.a2b_base64(data)
    elif encoding == "quoted-printable":
        data = binascii.a2b_qp(data)
    return decode_bytes(data, "utf-8")


def _returned_id(part: Message) -> str | None:
    """Return the Message-ID of the original a DSN sends back, if it has one."""
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return normalize_message_id(raw_header(inner[0], "Message-ID"))
    elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
        text = decode_bytes(part.get_payload(decode=True) or b"", "utf-8")
        headers = HeaderParser(policy=compat32).parsestr(text)
        return normalize_message_id(raw_header(headers, "Message-ID"))
    return None


def _text_bounce(msg: Message) -> BounceInfo:
    """Read what can be read from a plain-text bounce."""
    info = BounceInfo()
    for part in _own_parts(msg):
        info.original_message_id = info.original_message_id or _returned_id(part)
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        text = decode_bytes(part.get_payload(decode=True) or b"", "utf-8")
        if info.original_message_id is None:
            found = _ID_IN_TEXT.search(text)
            info.original_message_id = normalize_message_id(found and found.group(1))
        status = _STATUS.search(text)
        info.status = info.status or (status.group(1) if status else None)
        for address in _ADDRESS_LINE.findall(text):
            if address.lower() not in info.recipients:
                info.recipients.append(address.lower())
    return info
