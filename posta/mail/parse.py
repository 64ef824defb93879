"""Parse received messages into plain data, never raising on malformed input.

Parsing uses the compat32 policy with explicit, tolerant decoding (see
bench/parse_policy.py): it was measured faster than policy.default, and it
never raises while reading headers, where policy.default's header classes can
raise on malformed addresses or parameters. Every field is extracted in its own
guard; what fails is recorded in `defects` and left empty.
"""

import email.utils
import hashlib
import logging
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import TypeVar

from posta.mail.headers import decode_bytes, decode_header_text, parse_date, raw_header
from posta.mail.sanitize import html_to_text, sanitize_html
from posta.mail.threads import normalize_message_id, parse_id_list

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_DEPTH = 30
_LINE_ENDS = re.compile(rb"\r\n|\r")
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_AUTO_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")


@dataclass
class ParsedAttachment:
    """One attachment or inline part of a received message."""

    filename: str
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes


@dataclass
class ParsedMessage:
    """What Posta keeps of a received message."""

    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_name: str = ""
    from_addr: str | None = None
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None
    text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    dedupe_key: str = ""
    auto_submitted: bool = False


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw RFC 5322 bytes; malformed parts become defects, never exceptions."""
    parsed = ParsedMessage(dedupe_key=content_key(raw))
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except Exception as exc:  # the parser is meant never to raise; be sure
        logger.warning("Message could not be parsed at all: %r", exc)
        parsed.defects.append(f"unparseable: {exc!r}")
        return parsed
    defects = parsed.defects
    _read_headers(msg, parsed, defects)
    _guard(defects, "body", lambda: _read_body(msg, parsed, defects))
    defects.extend(_message_defects(msg))
    parsed.defects = list(dict.fromkeys(defects))
    return parsed


def content_key(raw: bytes) -> str:
    """Return a stable key for a message from its bytes (line ends normalized)."""
    digest = hashlib.sha256(_LINE_ENDS.sub(b"\n", raw).rstrip()).hexdigest()
    return f"sha256:{digest}"


def _read_headers(msg: Message, parsed: ParsedMessage, defects: list[str]) -> None:
    parsed.message_id = _guard(
        defects,
        "message-id",
        lambda: normalize_message_id(raw_header(msg, "Message-ID")),
    )
    if parsed.message_id:
        parsed.dedupe_key = parsed.message_id
    parsed.in_reply_to = _guard(
        defects,
        "in-reply-to",
        lambda: normalize_message_id(raw_header(msg, "In-Reply-To")),
    )
    parsed.references = (
        _guard(
            defects, "references", lambda: parse_id_list(raw_header(msg, "References"))
        )
        or []
    )
    parsed.subject = (
        _guard(
            defects, "subject", lambda: decode_header_text(raw_header(msg, "Subject"))
        )
        or ""
    )
    sender = _guard(defects, "from", lambda: _addresses(msg, "From"))
    if sender:
        parsed.from_name, parsed.from_addr = sender[0]
    parsed.to = _guard(defects, "to", lambda: _addresses(msg, "To")) or []
    parsed.cc = _guard(defects, "cc", lambda: _addresses(msg, "Cc")) or []
    parsed.date = _guard(defects, "date", lambda: parse_date(raw_header(msg, "Date")))
    parsed.auto_submitted = bool(
        _guard(defects, "auto-submitted", lambda: _is_auto(msg))
    )


def _guard(defects: list[str], what: str, read: Callable[[], T]) -> T | None:
    """Run one extraction step; record a defect instead of raising."""
    try:
        return read()
    except Exception as exc:  # malformed input must never stop the rest
        logger.debug("Could not read %s: %r", what, exc)
        defects.append(f"{what}: {exc!r}")
        return None


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """Return (decoded display name, lower-cased address) pairs of a header."""
    value = raw_header(msg, name)
    if not value:
        return []
    return [
        (decode_header_text(display) or "", addr.strip().lower())
        for display, addr in email.utils.getaddresses([value])
        if addr and "@" in addr
    ]


def _is_auto(msg: Message) -> bool:
    """Tell whether a machine sent this (auto-reply, bounce, list or bulk mail)."""
    auto = (raw_header(msg, "Auto-Submitted") or "no").strip().lower()
    if auto != "no":
        return True
    if (raw_header(msg, "Precedence") or "").strip().lower() in _AUTO_PRECEDENCE:
        return True
    if any(raw_header(msg, header) is not None for header in _AUTO_REPLY_HEADERS):
        return True
    return msg.get_content_type() == "multipart/report"


def _read_body(msg: Message, parsed: ParsedMessage, defects: list[str]) -> None:
    """Pick the first text and HTML bodies; everything else is an attachment."""
    raw_html = None
    for index, part in enumerate(_leaves(msg, defects)):
        kind = _body_kind(part)
        if kind == "text/plain" and not parsed.text:
            parsed.text = _guard(defects, "text", lambda p=part: _part_text(p)) or ""
        elif kind == "text/html" and raw_html is None:
            raw_html = _guard(defects, "html", lambda p=part: _part_text(p))
        else:
            attachment = _guard(
                defects, "attachment", lambda p=part, i=index: _attachment(p, i)
            )
            if attachment:
                parsed.attachments.append(attachment)
    if raw_html is not None:
        parsed.html = sanitize_html(raw_html)
        if not parsed.text.strip():
            parsed.text = html_to_text(parsed.html)


def _leaves(part: Message, defects: list[str], depth: int = 0) -> Iterator[Message]:
    """Yield the non-multipart parts in order; attached messages stay whole."""
    if depth > MAX_DEPTH:
        defects.append("MIME nesting too deep")
        return
    payload = part.get_payload()
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        for child in payload:
            yield from _leaves(child, defects, depth + 1)
    else:
        yield part


def _body_kind(part: Message) -> str | None:
    """Return text/plain or text/html for body candidates, else None."""
    content_type = part.get_content_type()
    if content_type not in ("text/plain", "text/html"):
        return None
    if part.get_content_disposition() == "attachment" or part.get_filename():
        return None
    return content_type


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    text = decode_bytes(payload, part.get_content_charset())
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attachment(part: Message, index: int) -> ParsedAttachment | None:
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        inner = part.get_payload()
        data = inner[0].as_bytes() if inner else b""
    else:
        data = part.get_payload(decode=True) or b""
    content_id = normalize_message_id(raw_header(part, "Content-ID"))
    disposition = part.get_content_disposition()
    return ParsedAttachment(
        filename=_filename(part, index, content_type),
        content_type=content_type,
        content_id=content_id.strip("<>") if content_id else None,
        inline=disposition == "inline" or (disposition is None and bool(content_id)),
        data=data,
    )


def _filename(part: Message, index: int, content_type: str) -> str:
    """Return a safe base filename (RFC 2231 and RFC 2047 decoded)."""
    name = part.get_filename() or part.get_param("name") or ""
    if isinstance(name, tuple):  # an RFC 2231 value get_param did not collapse
        name = email.utils.collapse_rfc2231_value(name)
    name = decode_header_text(str(name)) or ""
    name = _UNSAFE_FILENAME_CHARS.sub("_", name.replace("\\", "/").split("/")[-1])
    name = name.strip(" .")[:200]
    if name:
        return name
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"part-{index + 1}{extension}"


def _message_defects(msg: Message) -> Iterator[str]:
    """Yield the parser's own defect notes for every part."""
    for part in msg.walk():
        for defect in getattr(part, "defects", []):
            yield type(defect).__name__
