"""Unpack Outlook's TNEF attachment (winmail.dat): body text, HTML and files."""

import logging
import mimetypes
import re
import struct
from dataclasses import dataclass, field

from tnefparse import properties
from tnefparse.tnef import TNEF

from posta.mail.headers import decode_bytes

logger = logging.getLogger(__name__)

# MS-OXRTFCP: every compressed RTF stream starts from this 207-byte dictionary.
_RTF_PREBUF = (
    b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman "
    b"\\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New "
    b"RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0"
    b"\\fs20\\b\\i\\u\\tab\\tx"
)
_RTF_COMPRESSED = 0x75465A4C  # "LZFu"
_RTF_UNCOMPRESSED = 0x414C454D  # "MELA"
# A corrupt size field must not make a small attachment expand without bound.
_MAX_RTF = 32 * 1024 * 1024
_RTF_TOKEN = re.compile(
    rb"\\'([0-9a-fA-F]{2})|\\([a-zA-Z]+)(-?\d+)? ?|\\(.)|([{}])|[\r\n]+|([^\\{}\r\n]+)",
    re.DOTALL,
)
# Destinations whose text is never part of the body.
_RTF_SKIP = {
    b"fonttbl", b"colortbl", b"stylesheet", b"info", b"pict", b"object",
    b"header", b"footer", b"headerl", b"headerr", b"footerl", b"footerr",
    b"listtable", b"listoverridetable", b"rsidtbl", b"themedata", b"filetbl",
    b"latentstyles", b"datastore", b"xmlnstbl", b"generator", b"revtbl",
}  # fmt: skip
_RTF_SPECIAL = {
    b"par": "\n",
    b"line": "\n",
    b"tab": "\t",
    b"emdash": "—",
    b"endash": "–",
    b"bullet": "•",
    b"lquote": "‘",
    b"rquote": "’",
    b"ldblquote": "“",
    b"rdblquote": "”",
}


@dataclass
class TnefAttachment:
    """One file carried inside a TNEF stream."""

    filename: str
    content_type: str
    content_id: str | None
    data: bytes


@dataclass
class TnefContent:
    """The readable body and files of a TNEF stream."""

    text: str = ""
    html: str | None = None
    attachments: list[TnefAttachment] = field(default_factory=list)


def unpack(data: bytes) -> TnefContent:
    """Read a winmail.dat; raises ValueError when it is not TNEF at all."""
    tnef = TNEF(data, do_checksum=False)
    codepage = tnef.codepage or "cp1252"
    content = TnefContent(
        text=_as_text(tnef.body, codepage).replace("\r\n", "\n"),
        html=_as_text(tnef.htmlbody, codepage) or None,
    )
    # The public rtfbody property warns when the optional compressed_rtf
    # package is absent; this module decompresses the stream itself.
    compressed = getattr(tnef, "_rtfbody", None)
    if compressed and not (content.text.strip() or content.html):
        text, html = rtf_to_text(decompress_rtf(compressed))
        content.text, content.html = text, html
    for index, attachment in enumerate(tnef.attachments):
        content.attachments.append(_attachment(attachment, index))
    return content


def _as_text(value: str | bytes | None, codepage: str) -> str:
    if isinstance(value, bytes):
        return decode_bytes(value.rstrip(b"\0"), codepage)
    return (value or "").rstrip("\0")


def _attachment(attachment, index: int) -> TnefAttachment:
    props = {prop.name: prop.data for prop in attachment.mapi_attrs}
    filename = str(attachment.long_filename() or "").strip("\0")
    content_type = str(props.get(properties.MAPI_ATTACH_MIME_TAG) or "").strip("\0")
    if not content_type:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    content_id = str(props.get(properties.MAPI_ATTACH_CONTENT_ID) or "").strip("\0<>")
    return TnefAttachment(
        filename=filename or f"attachment-{index + 1}",
        content_type=content_type.lower(),
        content_id=content_id or None,
        data=bytes(attachment.data or b""),
    )


def decompress_rtf(data: bytes) -> bytes:
    """Decompress an Outlook RTF stream (MS-OXRTFCP, "LZFu" or "MELA")."""
    if len(data) < 16:
        raise ValueError("compressed RTF header is truncated")
    size, raw_size, magic, _crc = struct.unpack_from("<IIII", data)
    # MAPI readers strip trailing NULs from binary values; they belong to the
    # stream, so put them back up to the declared size.
    body = data[16 : size + 4].ljust(max(size - 12, 0), b"\0")
    raw_size = min(raw_size, _MAX_RTF)
    if magic == _RTF_UNCOMPRESSED:
        return body[:raw_size]
    if magic != _RTF_COMPRESSED:
        raise ValueError(f"unknown compressed RTF type {magic:#010x}")
    return _lzfu(body, raw_size)


def _lzfu(body: bytes, raw_size: int) -> bytes:
    window = bytearray(4096)
    window[: len(_RTF_PREBUF)] = _RTF_PREBUF
    write = len(_RTF_PREBUF)
    out = bytearray()
    position = 0
    while position < len(body) and len(out) < raw_size:
        flags = body[position]
        position += 1
        for bit in range(8):
            if position >= len(body):
                break
            if not flags & (1 << bit):
                chunk = body[position : position + 1]
                position += 1
            else:
                reference = int.from_bytes(body[position : position + 2], "big")
                position += 2
                offset, length = reference >> 4, (reference & 0xF) + 2
                if offset == write:  # the end marker points at the write cursor
                    return bytes(out[:raw_size])
                chunk = bytes(window[(offset + i) % 4096] for i in range(length))
            for byte in chunk:
                out.append(byte)
                window[write] = byte
                write = (write + 1) % 4096
    return bytes(out[:raw_size])


def rtf_to_text(rtf: bytes) -> tuple[str, str | None]:
    """Return (text, None) for plain RTF, or ("", html) for RTF that wraps HTML."""
    reader = _RtfReader(b"\\fromhtml" in rtf[:1024])
    for match in _RTF_TOKEN.finditer(rtf):
        reader.token(match)
    output = reader.finish()
    if reader.from_html:
        return "", output
    return output.replace("\r\n", "\n").strip(), None


class _RtfReader:
    """Follow RTF groups, keeping body text (or the HTML of \\fromhtml RTF)."""

    def __init__(self, from_html: bool):
        self.from_html = from_html
        self.codepage = "cp1252"
        # Per group: skip its text, inside \htmltag, inside \htmlrtf, \uc count.
        self.state = {"skip": False, "tag": False, "rtf": False, "uc": 1}
        self.stack: list[dict] = []
        self.parts: list[str] = []
        self.pending = bytearray()
        self.fallback_skip = 0
        self.star = False

    def token(self, match: re.Match) -> None:
        hex_byte, word, number, symbol, brace, text = match.groups()
        if brace == b"{":
            self.stack.append(dict(self.state))
        elif brace == b"}":
            self.state = self.stack.pop() if self.stack else self.state
        elif word is not None:
            self._word(word, number)
        elif hex_byte is not None:
            self._bytes(bytes.fromhex(hex_byte.decode()))
        elif symbol is not None:
            self.star = symbol == b"*"
            if symbol in b"\\{}":
                self._bytes(symbol)
            elif symbol == b"~":
                self._emit("\xa0")
        elif text is not None:
            self._bytes(text)
        if word is None and symbol != b"*":
            self.star = False

    def _word(self, word: bytes, number: bytes | None) -> None:
        starred, self.star = self.star, False
        if word == b"htmltag":
            self.state["tag"] = True
        elif starred or word in _RTF_SKIP:
            self.state["skip"] = True
        elif word == b"htmlrtf":
            self.state["rtf"] = number != b"0"
        elif word == b"ansicpg" and number:
            self.codepage = f"cp{int(number)}"
        elif word == b"uc" and number:
            self.state["uc"] = int(number)
        elif word == b"u" and number:
            self._emit(chr(int(number) % 65536))
            self.fallback_skip = self.state["uc"]
        elif word in _RTF_SPECIAL:
            # HTML wrapped in RTF keeps its own line ends as \par.
            html_break = word == b"par" and self.from_html
            self._emit("\r\n" if html_break else _RTF_SPECIAL[word])

    def _visible(self) -> bool:
        if self.state["skip"]:
            return False
        return self.state["tag"] or not (self.from_html and self.state["rtf"])

    def _bytes(self, data: bytes) -> None:
        if self.fallback_skip:
            skipped = min(self.fallback_skip, len(data))
            self.fallback_skip -= skipped
            data = data[skipped:]
        if data and self._visible():
            self.pending.extend(data)

    def _emit(self, text: str) -> None:
        if self._visible():
            self._flush()
            self.parts.append(text)

    def _flush(self) -> None:
        if self.pending:
            self.parts.append(decode_bytes(bytes(self.pending), self.codepage))
            self.pending.clear()

    def finish(self) -> str:
        self._flush()
        return "".join(self.parts)
