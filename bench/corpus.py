"""A deterministic corpus of replies to mails sent from tasks, written as Maildir.

Message n replies to the outgoing mail of task `task_of(n)`: the first
HEAVY_REPLIES go to task 0 (the "task with 200 emails" of the web bench), the
rest round-robin over the other tasks. Size budgets run from 2 KB to 300 KB (MIME
and base64 overhead take the largest file to about 330 KB), skewed
small (2 KB x 150 ** (u ** 5.2): median about 2.5 KB, mean about 17 KB, so 5,000
messages make about 85 MB); every tenth message carries an attachment and every
third has an HTML alternative. The same (count, seed, prefix) always gives the
same bytes.
"""

import base64
import os
import random
from collections.abc import Iterator
from pathlib import Path

COUNT = 5000
SEED = 20240606
TASKS = 500
HEAVY_REPLIES = 200
MIN_SIZE = 2048
MAX_SIZE = 300 * 1024
SKEW = 5.2
DOMAIN = "posta.test"
_WORDS = (
    "quote invoice delivery thanks please attached schedule meeting order price "
    "shipping tomorrow confirm revised draft contract Grüße résumé naïve budget "
    "client project status update question answer week Monday Friday review"
).split()
_POOL_CHARS = 1 << 20


def thread_id(task_index: int, prefix: str) -> str:
    """Return the Message-ID of the mail sent from task `task_index`."""
    return f"<bench-{prefix}-{task_index}@{DOMAIN}>"


def task_of(n: int, tasks: int = TASKS) -> int:
    """Return the index of the task that message n replies to."""
    if n < HEAVY_REPLIES:
        return 0
    return 1 + (n - HEAVY_REPLIES) % (tasks - 1)


def generate(
    count: int = COUNT, seed: int = SEED, prefix: str = "a"
) -> Iterator[bytes]:
    """Yield `count` raw RFC 5322 replies, the same ones for the same arguments."""
    rng = random.Random(seed)
    pool = _text_pool(rng)
    for n in range(count):
        size = int(MIN_SIZE * (MAX_SIZE / MIN_SIZE) ** (rng.random() ** SKEW))
        yield _message(n, size, rng, pool, prefix)


def write_maildir(maildir: Path, messages, uid: int, gid: int) -> tuple[int, int]:
    """Write messages into maildir/cur, owned by uid:gid; return (count, bytes)."""
    cur = maildir / "cur"
    count = total = 0
    for raw in messages:
        path = cur / f"{1700000000 + count}.M{count:06d}P1.bench:2,S"
        path.write_bytes(raw)
        os.chown(path, uid, gid)
        count += 1
        total += len(raw)
    return count, total


def _text_pool(rng: random.Random) -> str:
    """Return about 1 MB of wrapped text lines to slice bodies from."""
    lines = []
    chars = 0
    while chars < _POOL_CHARS:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 11)))
        lines.append(line)
        chars += len(line) + 2
    return "\r\n".join(lines) + "\r\n"


def _slice(pool: str, rng: random.Random, length: int) -> str:
    """Return `length` characters of the pool, starting at a line."""
    length = min(length, len(pool) - 1)
    start = pool.find("\r\n", rng.randrange(len(pool) - length)) + 2
    text = pool[start : start + length]
    return text[: text.rfind("\r\n") + 2] or "ok\r\n"


def _headers(n: int, prefix: str) -> str:
    task_index = task_of(n)
    parent = thread_id(task_index, prefix)
    return (
        f"From: Client {n % 97} <client{n % 97}@client.test>\r\n"
        f"To: Bench <bench@{DOMAIN}>\r\n"
        f"Subject: Re: Task {task_index} quote\r\n"
        f"Date: Mon, 06 May 2024 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
        f"{n % 60:02d} +0000\r\n"
        f"Message-ID: <reply-{prefix}-{n}@client.test>\r\n"
        f"In-Reply-To: {parent}\r\n"
        f"References: {parent}\r\n"
        "MIME-Version: 1.0\r\n"
    )


def _message(n: int, size: int, rng: random.Random, pool: str, prefix: str) -> bytes:
    """Build message n of roughly `size` bytes."""
    boundary = f"=_bench_{n}"
    text_budget = size - 300
    attachment = b""
    if n % 10 == 0:
        attachment = rng.randbytes(max(256, int(text_budget * 0.7 * 3 / 4)))
        text_budget = int(text_budget * 0.3)
    part = _body_part(n, max(200, text_budget), rng, pool)
    if not attachment:
        return (_headers(n, prefix) + part).encode()
    body = (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n{part}\r\n"
        f"--{boundary}\r\n{_attachment(n, attachment)}\r\n--{boundary}--\r\n"
    )
    return (_headers(n, prefix) + body).encode()


def _body_part(n: int, budget: int, rng: random.Random, pool: str) -> str:
    """Return the text part, or text + HTML alternatives for every third message."""
    plain = 'Content-Type: text/plain; charset="utf-8"\r\n'
    plain += "Content-Transfer-Encoding: 8bit\r\n\r\n"
    if n % 3:
        return plain + _slice(pool, rng, budget)
    text = _slice(pool, rng, budget // 2)
    paragraphs = "".join(f"<p>{line}</p>\r\n" for line in text.splitlines() if line)
    html = 'Content-Type: text/html; charset="utf-8"\r\n'
    html += "Content-Transfer-Encoding: 8bit\r\n\r\n"
    html += f"<html><body>\r\n{paragraphs}</body></html>\r\n"
    boundary = f"=_alt_{n}"
    alternative = (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n{plain}{text}\r\n--{boundary}\r\n{html}\r\n--{boundary}--"
    )
    return alternative


def _attachment(n: int, data: bytes) -> str:
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (
        f'Content-Type: application/pdf; name="quote-{n}.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="quote-{n}.pdf"\r\n\r\n' + encoded
    )
