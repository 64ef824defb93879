"""Parse received messages into plain data, never raising on malformed input.

Parsing uses the compat32 policy with explicit, tolerant decoding (see
bench/parse_policy.py): it was measured faster than policy.default, and it
never raises while reading headers, where policy.default's header classes can
raise on malformed addresses or parameters. Every field is extracted in its own
guard; what fails is recorded in `defects` and left empty.

`parse_message_file` reads a message from disk and writes large attachments to
a spool directory while it reads (see posta/mail/spool.py), so a message with a
30 MB attachment is never held in memory several times over.
"""

import base64
import binascii
import email.utils
import hashlib
import html
import logging
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import TypeVar

from posta.mail import calendar, tnef
from posta.mail.autoreply import (
    AUTO_REPLY,
    BOUNCE,
    BounceInfo,
    bounce_info,
    is_auto_reply,
)
from posta.mail.headers import (
    decode_bytes_noting,
    decode_header_noting,
    parse_date,
    raw_header,
)
from posta.mail.sanitize import (
    has_remote_images,
    html_to_text,
    referenced_content_ids,
    sanitize_html,
)
from posta.mail.spool import (
    SPOOL_HEADER,
    SPOOL_THRESHOLD,
    Spooled,
    spool_large_parts,
)
from posta.mail.threads import normalize_message_id, parse_id_list

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_DEPTH = 30
_LINE_ENDS = re.compile(rb"\r\n|\r")
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# Machine mail that is not an auto-reply but still must not be answered.
_MACHINE_PRECEDENCE = {"list"}
_MACHINE_HEADERS = ("X-Auto-Response-Suppress",)
_TNEF_TYPES = {"application/ms-tnef", "application/vnd.ms-tnef"}
# Report parts whose content `bounce` already carries.
_UNLISTED_TYPES = {"message/delivery-status"}
# Names for parts without one, where the type alone gives no good extension.
_FALLBACK_NAMES = {
    "text/rfc822-headers": "original-headers.txt",
    "message/disposition-notification": "disposition-notification.txt",
}


@dataclass
class ParsedAttachment:
    """One attachment or inline part of a received message.

    `inline` is True only for parts the HTML body shows as "cid:" images.
    A spooled part (parse_message_file) has empty `data` and its bytes in the
    file at `path`; `size` is the decoded size either way.
    """

    filename: str
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes
    path: str | None = None
    size: int = 0


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
    auto_kind: str | None = None
    bounce: BounceInfo | None = None
    thread_index: str | None = None
    has_remote_images: bool = False


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw RFC 5322 bytes; malformed parts become defects, never exceptions."""
    return _parse(raw, content_key(raw), {})


def parse_message_file(
    path: str, spool_dir: str, *, threshold: int = SPOOL_THRESHOLD
) -> ParsedMessage:
    """Parse a message file; attachments over `threshold` go to files in spool_dir.

    The caller owns the spool files (ParsedAttachment.path): it moves them into
    storage or deletes them.
    """
    reduced, key, spooled = spool_large_parts(path, spool_dir, threshold)
    return _parse(reduced, key, spooled)


def content_key(raw: bytes) -> str:
    """Return a stable key for a message from its bytes (line ends normalized)."""
    digest = hashlib.sha256(_LINE_ENDS.sub(b"\n", raw).rstrip()).hexdigest()
    return f"sha256:{digest}"


def _parse(raw: bytes, key: str, spooled: dict[str, Spooled]) -> ParsedMessage:
    parsed = ParsedMessage(dedupe_key=key)
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except Exception as exc:  # the parser is meant never to raise; be sure
        logger.warning("Message could not be parsed at all: %r", exc)
        parsed.defects.append(f"unparseable: {exc!r}")
        return parsed
    defects = parsed.defects
    _read_headers(msg, parsed, defects)
    if parsed.message_id:
        parsed.dedupe_key = parsed.message_id
    _guard(defects, "auto-submitted", lambda: _classify(msg, parsed))
    _guard(defects, "body", lambda: _read_body(msg, parsed, defects, spooled, 0))
    defects.extend(_message_defects(msg))
    parsed.defects = list(dict.fromkeys(defects))
    return parsed


def _read_headers(msg: Message, parsed: ParsedMessage, defects: list[str]) -> None:
    parsed.message_id = _guard(
        defects,
        "message-id",
        lambda: normalize_message_id(raw_header(msg, "Message-ID")),
    )
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
        _guard(defects, "subject", lambda: _text(raw_header(msg, "Subject"), defects))
        or ""
    )
    sender = _guard(defects, "from", lambda: _addresses(msg, "From", defects))
    if sender:
        parsed.from_name, parsed.from_addr = sender[0]
    parsed.to = _guard(defects, "to", lambda: _addresses(msg, "To", defects)) or []
    parsed.cc = _guard(defects, "cc", lambda: _addresses(msg, "Cc", defects)) or []
    parsed.date = _guard(defects, "date", lambda: parse_date(raw_header(msg, "Date")))
    parsed.thread_index = _guard(defects, "thread-index", lambda: _thread_index(msg))


def _guard(defects: list[str], what: str, read: Callable[[], T]) -> T | None:
    """Run one extraction step; record a defect instead of raising."""
    try:
        return read()
    except Exception as exc:  # malformed input must never stop the rest
        logger.debug("Could not read %s: %r", what, exc)
        defects.append(f"{what}: {exc!r}")
        return None


def _text(value: str | None, defects: list[str]) -> str | None:
    """Decode a header's encoded words, noting what had to be repaired."""
    text, notes = decode_header_noting(value)
    defects.extend(notes)
    return text


def _addresses(msg: Message, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """Return (decoded display name, lower-cased address) pairs of a header."""
    value = raw_header(msg, name)
    if not value:
        return []
    return [
        (_text(display, defects) or "", addr.strip().lower())
        for display, addr in email.utils.getaddresses([value])
        if addr and "@" in addr
    ]


def _thread_index(msg: Message) -> str | None:
    """Return Outlook's Thread-Index when it is well formed (22 + 5n bytes)."""
    value = "".join((raw_header(msg, "Thread-Index") or "").split())
    if not value:
        return None
    try:
        size = len(base64.b64decode(value, validate=True))
    except binascii.Error:
        return None
    return value if size >= 22 and (size - 22) % 5 == 0 else None


def _classify(msg: Message, parsed: ParsedMessage) -> None:
    """Set auto_kind, bounce and auto_submitted."""
    parsed.bounce = bounce_info(msg, parsed.subject, parsed.from_addr)
    if parsed.bounce:
        parsed.auto_kind = BOUNCE
    elif is_auto_reply(msg, parsed.subject):
        parsed.auto_kind = AUTO_REPLY
    if parsed.auto_kind is not None:
        parsed.auto_submitted = True
        return
    precedence = (raw_header(msg, "Precedence") or "").strip().lower()
    parsed.auto_submitted = precedence in _MACHINE_PRECEDENCE or any(
        raw_header(msg, name) is not None for name in _MACHINE_HEADERS
    )


@dataclass
class _Body:
    """What one message's parts yield while they are read, before finishing."""

    defects: list[str]
    spooled: dict[str, Spooled]
    depth: int
    in_report: bool
    raw_html: str | None = None
    summaries: list[str | None] = field(default_factory=list)
    forwards: list[ParsedMessage] = field(default_factory=list)


def _read_body(
    msg: Message,
    parsed: ParsedMessage,
    defects: list[str],
    spooled: dict[str, Spooled],
    depth: int,
) -> None:
    """Pick the first text and HTML bodies; everything else is an attachment."""
    in_report = msg.get_content_type() == "multipart/report"
    body = _Body(defects, spooled, depth, in_report)
    for part in _leaves(msg, defects, depth):
        if not _take_body_part(part, parsed, body):
            _take_other_part(part, parsed, body)
    _finish_body(parsed, body.raw_html, body.summaries, body.forwards)


def _take_body_part(part: Message, parsed: ParsedMessage, body: _Body) -> bool:
    """Use the part as the text or HTML body if it is the first of its kind."""
    kind = _body_kind(part)
    if kind == "text/plain" and not parsed.text:
        text = _guard(body.defects, "text", lambda: _part_text(part, body.defects))
        parsed.text = text or ""
        return True
    if kind == "text/html" and body.raw_html is None:
        body.raw_html = _guard(
            body.defects, "html", lambda: _part_text(part, body.defects)
        )
        return True
    return False


def _take_other_part(part: Message, parsed: ParsedMessage, body: _Body) -> None:
    """Handle invitations, TNEF, reports and forwards; list the rest."""
    defects = body.defects
    content_type = part.get_content_type()
    if _body_kind(part) == "text/calendar":
        body.summaries.append(
            _guard(defects, "calendar", lambda: _invite(part, defects))
        )
    elif _is_tnef(part):
        content = _guard(defects, "tnef", lambda: _tnef(part, parsed, body.spooled))
        if content is not None:
            parsed.text = parsed.text or content.text
            if body.raw_html is None:
                body.raw_html = content.html
            return
    elif content_type in _UNLISTED_TYPES:
        return
    elif content_type == "message/rfc822" and not body.in_report:
        forward = _guard(
            defects,
            "forward",
            lambda: _forwarded(part, defects, body.spooled, body.depth + 1),
        )
        if forward:
            body.forwards.append(forward)
    _add_attachment(part, parsed, defects, body.spooled)


def _finish_body(
    parsed: ParsedMessage,
    raw_html: str | None,
    summaries: list[str | None],
    forwards: list[ParsedMessage],
) -> None:
    """Sanitize the HTML, derive missing text and decide which parts are inline."""
    if raw_html is not None:
        parsed.html = sanitize_html(raw_html, cid_aliases=_cid_aliases(parsed))
        if not parsed.text.strip():
            parsed.text = html_to_text(parsed.html)
    if not parsed.text.strip():
        parsed.text = "\n\n".join(summary for summary in summaries if summary)
    for forward in forwards:
        parsed.text += _forward_text(forward)
        if parsed.html is not None:
            parsed.html += _forward_html(forward)
        parsed.attachments.extend(forward.attachments)
    shown = {cid.lower() for cid in referenced_content_ids(parsed.html)}
    for attachment in parsed.attachments:
        attachment.inline = (attachment.content_id or "").lower() in shown
    parsed.has_remote_images = has_remote_images(parsed.html)


def _leaves(part: Message, defects: list[str], depth: int = 0) -> Iterator[Message]:
    """Yield the non-multipart parts in order; attached messages stay whole."""
    if depth > MAX_DEPTH:
        defects.append("MIME nesting too deep")
        return
    payload = part.get_payload()
    if part.is_multipart() and part.get_content_maintype() != "message":
        for child in payload:
            yield from _leaves(child, defects, depth + 1)
    else:
        yield part


def _body_kind(part: Message) -> str | None:
    """Return text/plain, text/html or text/calendar for body parts, else None."""
    content_type = part.get_content_type()
    if content_type not in ("text/plain", "text/html", "text/calendar"):
        return None
    if part.get_content_disposition() == "attachment":
        return None
    if content_type != "text/calendar" and part.get_filename():
        return None
    return content_type


def _part_text(part: Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True) or b""
    text, note = decode_bytes_noting(payload, part.get_content_charset())
    if note:
        defects.append(note)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _invite(part: Message, defects: list[str]) -> str:
    """Summarize a text/calendar part (meeting title, time, place, organizer)."""
    return calendar.summarize(_part_text(part, defects))


def _is_tnef(part: Message) -> bool:
    if part.get_content_type() in _TNEF_TYPES:
        return True
    return (part.get_filename() or "").lower() == "winmail.dat"


def _tnef(
    part: Message, parsed: ParsedMessage, spooled: dict[str, Spooled]
) -> tnef.TnefContent:
    """Unpack a winmail.dat; its files become the message's attachments."""
    spool = _spool_entry(part, spooled)
    if spool:
        # tnefparse needs the whole stream; the spool file is not listed, so
        # nobody else would remove it.
        data = Path(spool.path).read_bytes()
        Path(spool.path).unlink()
    else:
        data = part.get_payload(decode=True) or b""
    content = tnef.unpack(data)
    for item in content.attachments:
        parsed.attachments.append(
            ParsedAttachment(
                filename=_safe_filename(item.filename)
                or _fallback_name(len(parsed.attachments), item.content_type),
                content_type=item.content_type,
                content_id=item.content_id,
                inline=False,
                data=item.data,
                size=len(item.data),
            )
        )
    return content


def _forwarded(
    part: Message, defects: list[str], spooled: dict[str, Spooled], depth: int
) -> ParsedMessage | None:
    """Parse an attached message so its text and attachments can be shown."""
    inner = part.get_payload()
    if not isinstance(inner, list) or not inner or depth > MAX_DEPTH:
        return None
    forward = ParsedMessage()
    _read_headers(inner[0], forward, defects)
    _read_body(inner[0], forward, defects, spooled, depth)
    return forward


def _forward_header(forward: ParsedMessage) -> list[str]:
    sender = email.utils.formataddr((forward.from_name, forward.from_addr or ""))
    lines = ["---------- Forwarded message ----------", f"From: {sender}"]
    if forward.date:
        lines.append(f"Date: {email.utils.format_datetime(forward.date)}")
    lines.append(f"Subject: {forward.subject}")
    return lines


def _forward_text(forward: ParsedMessage) -> str:
    return "\n\n" + "\n".join(_forward_header(forward)) + "\n\n" + forward.text


def _forward_html(forward: ParsedMessage) -> str:
    """Render a forward as sanitized HTML: both halves are already safe."""
    header = "<br>".join(html.escape(line) for line in _forward_header(forward))
    body = forward.html or f"<pre>{html.escape(forward.text)}</pre>"
    return f"<hr><p>{header}</p><blockquote>{body}</blockquote>"


def _add_attachment(
    part: Message,
    parsed: ParsedMessage,
    defects: list[str],
    spooled: dict[str, Spooled],
) -> None:
    attachment = _guard(
        defects,
        "attachment",
        lambda: _attachment(part, len(parsed.attachments), spooled),
    )
    if attachment:
        parsed.attachments.append(attachment)


def _attachment(
    part: Message, index: int, spooled: dict[str, Spooled]
) -> ParsedAttachment:
    content_type = part.get_content_type()
    spool = _spool_entry(part, spooled)
    if spool:
        data = b""
    elif content_type == "message/rfc822":
        inner = part.get_payload()
        data = inner[0].as_bytes() if inner else b""
    else:
        data = part.get_payload(decode=True) or b""
    return ParsedAttachment(
        filename=_filename(part, index, content_type),
        content_type=content_type,
        content_id=_content_id(part),
        inline=False,
        data=data,
        path=spool.path if spool else None,
        size=spool.size if spool else len(data),
    )


def _spool_entry(part: Message, spooled: dict[str, Spooled]) -> Spooled | None:
    """Return the spool file standing in for a part's body, if there is one."""
    # Only our own unguessable tokens count; the received mail may carry the
    # same header name with any value.
    for value in part.get_all(SPOOL_HEADER) or ():
        if str(value).strip() in spooled:
            return spooled[str(value).strip()]
    return None


def _content_id(part: Message) -> str | None:
    """Return the Content-ID without angle brackets or whitespace."""
    value = "".join((raw_header(part, "Content-ID") or "").split())
    return value.strip("<>") or None


def _cid_aliases(parsed: ParsedMessage) -> dict[str, str]:
    """Map how HTML may name an inline part without "cid:" to its cid: URL."""
    aliases: dict[str, str] = {}
    for attachment in parsed.attachments:
        if attachment.content_id:
            url = f"cid:{attachment.content_id}"
            aliases.setdefault(attachment.content_id, url)
            aliases.setdefault(attachment.filename, url)
    return aliases


def _filename(part: Message, index: int, content_type: str) -> str:
    """Return a safe base filename (RFC 2231 and RFC 2047 decoded)."""
    for name, header in (("filename", "content-disposition"), ("name", None)):
        value = _param_text(part, name, header or "content-type")
        if value and (safe := _safe_filename(value)):
            return safe
    if content_type == "message/rfc822":
        subject = _safe_filename(_forward_subject(part))
        return f"{subject[:150] or 'forwarded'}.eml"
    return _fallback_name(index, content_type)


def _param_text(part: Message, name: str, header: str) -> str:
    """Return a header parameter as text: RFC 2231 charset, then RFC 2047 words."""
    value = part.get_param(name, header=header)
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded chars)
        charset, _language, text = value
        data = str(text).encode("latin-1", "surrogateescape")
        value = decode_bytes_noting(data, charset or "utf-8")[0]
    elif value is not None:
        value = email.utils.unquote(str(value))
    return decode_header_noting(value)[0] or ""


def _forward_subject(part: Message) -> str:
    inner = part.get_payload()
    if isinstance(inner, list) and inner:
        return decode_header_noting(raw_header(inner[0], "Subject"))[0] or ""
    return ""


def _safe_filename(name: str) -> str:
    name = _UNSAFE_FILENAME_CHARS.sub("_", name.replace("\\", "/").split("/")[-1])
    return name.strip(" .")[:200]


def _fallback_name(index: int, content_type: str) -> str:
    if content_type in _FALLBACK_NAMES:
        return _FALLBACK_NAMES[content_type]
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment-{index + 1}{extension}"


def _message_defects(msg: Message) -> Iterator[str]:
    """Yield the parser's own defect notes for every part."""
    for part in msg.walk():
        for defect in getattr(part, "defects", []):
            yield type(defect).__name__
