"""Tolerant decoding of raw header values (RFC 2047 words, 8-bit bytes, dates)."""

import base64
import binascii
import codecs
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n[ \t]*")
# Mail labelled Latin-1 or ASCII is in practice often Windows-1252 or UTF-8.
_CHARSET_OVERRIDES = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
}


def raw_header(msg: Message, name: str) -> str | None:
    """Return the first `name` header as text, unfolded, with 8-bit bytes decoded."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return fix_8bit(_FOLD.sub(" ", str(value))).strip()
    return None


def fix_8bit(value: str) -> str:
    """Turn bytes smuggled in as surrogates (raw 8-bit headers) into text."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        data = value.encode("ascii", "surrogateescape")
        return decode_bytes(data, "utf-8")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes in a declared charset, falling back instead of failing."""
    name = (charset or "utf-8").strip().strip('"').lower()
    name = _CHARSET_OVERRIDES.get(name, name)
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name)
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252" if name == "utf-8" else name, "replace")


def decode_header_text(value: str | None) -> str | None:
    """Decode RFC 2047 encoded words; undecodable words are kept as they are."""
    if value is None:
        return None
    text = fix_8bit(_FOLD.sub(" ", value))
    pieces: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        charset = match.group(1).split("*")[0]
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            pieces.append(_flush(pending, pending_charset) + between + match.group(0))
            pending_charset = None
        # Whitespace between adjacent encoded words is not part of the text, and
        # a character may be split across words, so join their bytes first.
        elif pending_charset is not None and not between.strip():
            if charset.lower() != pending_charset.lower():
                pieces.append(_flush(pending, pending_charset))
                pending_charset = charset
            pending.extend(data)
        else:
            pieces.append(_flush(pending, pending_charset) + between)
            pending.extend(data)
            pending_charset = charset
        position = match.end()
    pieces.append(_flush(pending, pending_charset) + text[position:])
    return "".join(pieces).strip()


def _flush(pending: bytearray, charset: str | None) -> str:
    if not pending:
        return ""
    text = decode_bytes(bytes(pending), charset)
    pending.clear()
    return text


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    """Return the bytes of one encoded word, or None if they cannot be decoded."""
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "Qq":
        return binascii.a2b_qp(raw, header=True)
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error:
        return None


def parse_date(value: str | None) -> datetime | None:
    """Parse an RFC 5322 date into an aware datetime (UTC when no zone is given)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
