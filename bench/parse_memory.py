"""Measure peak Python memory when parsing a message with a large attachment.

Usage: .venv/bin/python bench/parse_memory.py [attachment MB]

Writes a message with one base64 attachment (30 MB by default) to a temporary
directory, then reports tracemalloc's peak for parse_message_file (which spools
the attachment to disk while reading) and, for comparison, for reading the file
and calling parse_message on the bytes.
"""

import base64
import hashlib
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posta.mail.parse import parse_message, parse_message_file  # noqa: E402

CHUNK = 57 * 1024  # a multiple of 57 bytes encodes to whole 76-character lines


def write_message(path: Path, size: int) -> str:
    """Write a message with a `size`-byte attachment; return the data's sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        out.write(
            b"From: Ann <ann@example.test>\r\nTo: team@posta.test\r\n"
            b"Subject: Big file\r\nMessage-ID: <big@example.test>\r\n"
            b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nThe file is attached.\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="big.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        written = 0
        while written < size:
            data = os.urandom(min(CHUNK, size - written))
            digest.update(data)
            encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
            out.write(encoded)
            written += len(data)
        out.write(b"--b--\r\n")
    return digest.hexdigest()


def peak(function) -> tuple[float, object]:
    """Return (peak MiB allocated while running `function`, its result)."""
    tracemalloc.start()
    result = function()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20, result


def main() -> None:
    size = int(float(sys.argv[1]) * 2**20) if len(sys.argv) > 1 else 30 * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.eml"
        expected = write_message(path, size)
        on_disk = path.stat().st_size / 2**20
        print(f"message: {on_disk:.1f} MiB on disk, attachment {size / 2**20:.1f} MiB")
        spool = Path(tmp) / "spool"
        spool.mkdir()
        top, parsed = peak(lambda: parse_message_file(str(path), str(spool)))
        attachment = parsed.attachments[0]
        same = hashlib.sha256(Path(attachment.path).read_bytes()).hexdigest()
        ok = same == expected
        print(f"parse_message_file peak: {top:8.1f} MiB  spooled, sha256 ok: {ok}")
        top, parsed = peak(lambda: parse_message(path.read_bytes()))
        same = hashlib.sha256(parsed.attachments[0].data).hexdigest() == expected
        print(f"parse_message peak:      {top:8.1f} MiB  in memory, sha256 ok: {same}")


if __name__ == "__main__":
    main()
