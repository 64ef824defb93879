"""Tolerant decoding of raw header values (RFC 2047 words, 8-bit bytes, dates)."""

import base64
import binascii
import codecs
import email.utils
import functools
import re
from datetime import UTC, datetime
from email.message import Message

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n[ \t]*")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
# Labels Python does not know, or knows under another name; checked first.
_CHARSET_ALIASES = {
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
    "unknown": "utf-8",
    "x-user-defined": "cp1252",
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "x-sjis": "cp932",
    "x-mac-roman": "mac-roman",
    "x-gbk": "gb18030",
    "x-euc-tw": "big5",
    "ks_c_5601": "cp949",
}
# Labels whose real-world bytes are in practice a superset encoding: mail
# labelled Latin-1 or ASCII is often Windows-1252 or UTF-8, "gb2312" is GBK or
# GB18030, "euc-kr" is CP949, "shift_jis" is CP932. Keyed by Python's name.
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "ascii": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
    "big5": "big5hkscs",
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


def resolve_charset(charset: str | None) -> str | None:
    """Return the Python codec to decode a declared charset with, or None."""
    return _resolve(charset or "utf-8")


@functools.lru_cache(maxsize=256)
def _resolve(charset: str) -> str | None:
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        name = codecs.lookup(name).name
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes in a declared charset, falling back instead of failing."""
    return decode_bytes_noting(data, charset)[0]


def decode_bytes_noting(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode like decode_bytes; also return a defect note when it had to guess."""
    name = resolve_charset(charset)
    note = None if name else f"unknown charset {charset!r}"
    if name:
        try:
            return data.decode(name), None
        except (UnicodeDecodeError, LookupError):
            note = f"bytes not valid in charset {charset!r}"
    try:
        return data.decode("utf-8"), note
    except UnicodeDecodeError:
        fallback = "cp1252" if name in (None, "utf-8") else name
        return data.decode(fallback, "replace"), note


def decode_header_text(value: str | None) -> str | None:
    """Decode RFC 2047 encoded words; undecodable words are kept as they are."""
    return decode_header_noting(value)[0]


def decode_header_noting(value: str | None) -> tuple[str | None, list[str]]:
    """Decode like decode_header_text; also return notes on what was repaired."""
    if value is None:
        return None, []
    text = fix_8bit(_FOLD.sub(" ", value))
    notes: list[str] = []
    pieces: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        charset = match.group(1).split("*")[0]
        data = _word_bytes(charset, match.group(2), match.group(3), notes)
        if data is None:
            flushed = _flush(pending, pending_charset, notes)
            pieces.append(flushed + between + match.group(0))
            pending_charset = None
        # Whitespace between adjacent encoded words is not part of the text, and
        # a character may be split across words, so join their bytes first.
        elif pending_charset is not None and not between.strip():
            if charset.lower() != pending_charset.lower():
                pieces.append(_flush(pending, pending_charset, notes))
                pending_charset = charset
            pending.extend(data)
        else:
            pieces.append(_flush(pending, pending_charset, notes) + between)
            pending.extend(data)
            pending_charset = charset
        position = match.end()
    pieces.append(_flush(pending, pending_charset, notes) + text[position:])
    return "".join(pieces).strip(), notes


def _flush(pending: bytearray, charset: str | None, notes: list[str]) -> str:
    if not pending:
        return ""
    text, note = decode_bytes_noting(bytes(pending), charset)
    if note:
        notes.append(note)
    pending.clear()
    return text


def _word_bytes(
    charset: str, encoding: str, payload: str, notes: list[str]
) -> bytes | None:
    """Return the bytes of one encoded word, or None if they cannot be decoded."""
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        notes.append("encoded word with non-ASCII payload")
        return None
    if encoding in "Qq":
        return binascii.a2b_qp(raw, header=True)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        pass
    # Broken padding or stray characters: decode what remains once the junk is
    # dropped (a lone trailing character carries no whole byte), but only if
    # that is text in the word's charset; garbage would be worse than the word.
    notes.append("broken base64 in encoded word")
    cleaned = _NOT_BASE64.sub(b"", raw)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    data = base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    if not data or decode_bytes_noting(data, charset)[1]:
        return None
    return data


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
