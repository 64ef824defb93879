"""Read a message file once, writing large attachment bodies to spool files.

The result is the message with those bodies left out (a header naming the
spool entry stands in for each), small enough to parse in memory, plus the
same content key `parse_message` gives the complete bytes. Memory stays near
one attachment line and the small parts, whatever the attachment's size.
"""

import binascii
import hashlib
import io
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import BinaryIO

logger = logging.getLogger(__name__)

SPOOL_HEADER = "X-Posta-Spool"
SPOOL_THRESHOLD = 1024 * 1024
MAX_DEPTH = 30
_LINE_LIMIT = 1024 * 1024
_LINE_ENDS = re.compile(rb"\r\n|\r")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_IDENTITY = {"", "7bit", "8bit", "binary"}


@dataclass
class Spooled:
    """A part body written to disk: its file and decoded size."""

    path: str
    size: int


def spool_large_parts(
    path: str, spool_dir: str, threshold: int = SPOOL_THRESHOLD
) -> tuple[bytes, str, dict[str, Spooled]]:
    """Return (message without large bodies, content key, spool entries by token)."""
    with open(path, "rb") as source:
        reducer = _Reducer(source, spool_dir, threshold)
        try:
            reducer.entity([], 0)
            reducer.copy_rest()
        except BaseException:
            reducer.discard()
            raise
    return reducer.out.getvalue(), reducer.hasher.key(), reducer.spooled


class _ContentHash:
    """Incremental form of parse.content_key: line ends normalized, end stripped."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.held = bytearray()
        self.carry = b""

    def update(self, line: bytes) -> None:
        # A CR at a chunk's end may pair with the next chunk's LF.
        data, self.carry = self.carry + line, b""
        if data.endswith(b"\r"):
            data, self.carry = data[:-1], b"\r"
        data = _LINE_ENDS.sub(b"\n", data)
        stripped = data.rstrip()
        if stripped:
            self.sha.update(self.held)
            self.held.clear()
            self.sha.update(stripped)
            data = data[len(stripped) :]
        # Trailing whitespace counts only if something follows it.
        self.held += data

    def key(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


class _Reducer:
    """Copy a message's lines to `out`, diverting large leaf bodies to files."""

    def __init__(self, source: BinaryIO, spool_dir: str, threshold: int):
        self.hasher = _ContentHash()
        self.lines = self._read(source)
        self.spool_dir = spool_dir
        self.threshold = threshold
        self.out = io.BytesIO()
        self.spooled: dict[str, Spooled] = {}
        self.created: list[str] = []
        # Unguessable, so a header in the received mail cannot name a spool file.
        self.token = secrets.token_hex(12)

    def _read(self, source: BinaryIO) -> Iterator[bytes]:
        while line := source.readline(_LINE_LIMIT):
            self.hasher.update(line)
            yield line
        self.hasher.update(b"")

    def entity(self, boundaries: list[bytes], depth: int) -> bytes | None:
        """Copy one entity; return the boundary line that ended it, or None."""
        headers, term = self._headers(boundaries)
        if term is not None or not headers or headers[-1].strip(b"\r\n"):
            self.out.write(b"".join(headers))
            return term
        info = BytesHeaderParser(policy=compat32).parsebytes(b"".join(headers))
        multipart = info.get_content_maintype() == "multipart"
        boundary = info.get_boundary() if multipart else None
        if depth >= MAX_DEPTH:
            self.out.write(b"".join(headers))
            return self.copy_until(boundaries)
        if boundary:
            self.out.write(b"".join(headers))
            return self._multipart(boundary, boundaries, depth)
        if info.get_content_type() == "message/rfc822" and _cte(info) in _IDENTITY:
            self.out.write(b"".join(headers))
            return self.entity(boundaries, depth + 1)
        return self._leaf(headers, info, boundaries)

    def _headers(self, boundaries: list[bytes]) -> tuple[list[bytes], bytes | None]:
        headers: list[bytes] = []
        for line in self.lines:
            if _match(line, boundaries):
                return headers, line
            headers.append(line)
            if not line.strip(b"\r\n"):
                break
        return headers, None

    def _multipart(
        self, boundary: str, boundaries: list[bytes], depth: int
    ) -> bytes | None:
        mine = boundary.encode("ascii", "surrogateescape")
        inner = [*boundaries, mine]
        term = self.copy_until(inner)  # the preamble
        while term is not None:
            owner, closing = _match(term, inner)
            if owner != mine:  # an outer boundary ends this multipart early
                return term
            self.out.write(term)
            if closing:
                return self.copy_until(boundaries)  # the epilogue
            term = self.entity(inner, depth + 1)
        return None

    def copy_until(self, boundaries: list[bytes]) -> bytes | None:
        """Copy lines up to (not including) a boundary line, which is returned."""
        for line in self.lines:
            if _match(line, boundaries):
                return line
            self.out.write(line)
        return None

    def copy_rest(self) -> None:
        for line in self.lines:
            self.out.write(line)

    def _leaf(
        self, headers: list[bytes], info: Message, boundaries: list[bytes]
    ) -> bytes | None:
        buffered: list[bytes] = []
        size = 0
        sink: _Sink | None = None
        term = None
        for line in self.lines:
            if _match(line, boundaries):
                term = line
                break
            if sink:
                sink.write(line)
                continue
            buffered.append(line)
            size += len(line)
            if size > self.threshold and _spoolable(info):
                sink = _Sink(self.spool_dir, _cte(info))
                self.created.append(sink.path)
                for held in buffered:
                    sink.write(held)
                buffered = []
        if sink is None:
            self.out.write(b"".join(headers) + b"".join(buffered))
            return term
        token = f"{self.token}-{len(self.spooled)}"
        self.spooled[token] = sink.close()
        stand_in = f"{SPOOL_HEADER}: {token}".encode() + headers[-1]
        self.out.write(b"".join(headers[:-1]) + stand_in + headers[-1])
        return term

    def discard(self) -> None:
        """Remove the spool files written so far (reading failed)."""
        for path in self.created:
            _remove(path)


class _Sink:
    """Decode one part body line by line into a spool file."""

    def __init__(self, spool_dir: str, encoding: str):
        handle, self.path = tempfile.mkstemp(
            prefix="posta-", suffix=".part", dir=spool_dir
        )
        self.file = os.fdopen(handle, "wb")
        self.encoding = encoding
        self.size = 0
        self.carry = b""
        # The line end before a boundary belongs to the boundary, so each line
        # end is written only once another body line follows it.
        self.pending_eol = b""

    def write(self, line: bytes) -> None:
        if self.encoding == "base64":
            data = self.carry + _NOT_BASE64.sub(b"", line)
            whole = len(data) - len(data) % 4
            self.carry = data[whole:]
            self._put(_b64(data[:whole]))
            return
        content = line.rstrip(b"\r\n")
        eol = line[len(content) :]
        if self.encoding == "quoted-printable":
            soft = content.endswith(b"=")
            content = binascii.a2b_qp(content[:-1] if soft else content)
            eol = b"" if soft else eol
        self._put(self.pending_eol + content)
        self.pending_eol = eol

    def _put(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def close(self) -> Spooled:
        if self.carry:
            carry = self.carry.rstrip(b"=")
            carry = carry[: len(carry) - (len(carry) % 4 == 1)]
            self._put(_b64(carry + b"=" * (-len(carry) % 4)))
        self.file.close()
        return Spooled(self.path, self.size)


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        logger.debug("Skipping undecodable base64 in a spooled part")
        return b""


def _match(line: bytes, boundaries: list[bytes]) -> tuple[bytes, bool] | None:
    """Return (boundary, is_closing) when `line` is a delimiter of one of them."""
    if not line.startswith(b"--") or not boundaries:
        return None
    stripped = line.rstrip(b"\r\n").rstrip(b" \t")
    for boundary in reversed(boundaries):
        if stripped == b"--" + boundary:
            return boundary, False
        if stripped == b"--" + boundary + b"--":
            return boundary, True
    return None


def _cte(info: Message) -> str:
    return str(info.get("Content-Transfer-Encoding") or "").strip().lower()


def _spoolable(info: Message) -> bool:
    """Attachments may be spooled; body text and nested messages stay in memory."""
    if info.get_content_maintype() in ("multipart", "message"):
        return False
    if info.get_content_maintype() == "text":
        return info.get_content_disposition() == "attachment"
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
