"""Small raw messages for the mail tests."""

from datetime import UTC, datetime
from email.utils import format_datetime


def raw_message(
    subject: str = "Hello",
    message_id: str | None = "<m1@example.test>",
    body: str = "Hello there.\n",
    sender: str = "Ann Example <ann@example.test>",
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    extra: str = "",
) -> bytes:
    """Return a simple text/plain message as CRLF bytes."""
    lines = [
        f"From: {sender}",
        "To: team@posta.test",
        f"Subject: {subject}",
        f"Date: {format_datetime(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))}",
    ]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {' '.join(references)}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    if extra:
        lines.append(extra.rstrip("\r\n"))
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode() + body.replace("\n", "\r\n").encode()
