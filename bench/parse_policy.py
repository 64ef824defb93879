"""Compare email parsing speed with policy.compat32 and policy.default.

Usage: .venv/bin/python bench/parse_policy.py [messages] [rounds]

The corpus mixes synthetic messages (plain, HTML + text, attachments, encoded
headers) with the odd real-world samples shipped in CPython's test suite when
present. Two measures per policy: parsing alone, and parsing plus reading what
Posta keeps (threading headers, addresses, date, text/HTML body, attachments).
"""

import email.header
import email.utils
import random
import sys
import sysconfig
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posta.mail.compose import (  # noqa: E402
    OutgoingAttachment,
    OutgoingMail,
    build_message,
)
from posta.mail.parse import parse_message  # noqa: E402

WORDS = "alpha beta gamma delta résumé Grüße naïve 東京 task reply status".split()


def synthetic(index: int, rng: random.Random, tmp: Path) -> bytes:
    """Build one synthetic message of a kind chosen by index."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 2500)))
    mail = OutgoingMail(
        from_addr="sender@example.test",
        from_name="Zoë Sender",
        to=["Ann <ann@example.test>", "bob@example.test"],
        cc=["Cléo <cleo@example.test>"] if index % 3 else [],
        subject=f"Re: Überprüfung {index} " + " ".join(rng.sample(WORDS, 4)),
        text=text,
        html=f"<html><body><p>{text}</p></body></html>" if index % 2 else None,
        message_id=f"<m{index}@example.test>",
        in_reply_to=f"<m{index - 1}@example.test>",
        references=[f"<m{i}@example.test>" for i in range(max(0, index - 5), index)],
    )
    if index % 5 == 0:
        path = tmp / f"att{index}.bin"
        path.write_bytes(rng.randbytes(30_000))
        mail.attachments = [
            OutgoingAttachment("Straße Plan.pdf", "application/pdf", str(path))
        ]
    return build_message(mail)


def corpus(count: int) -> list[bytes]:
    """Return `count` messages: CPython's samples first, then synthetic ones."""
    tmp = Path("/tmp/posta-bench-attachments")
    tmp.mkdir(exist_ok=True)
    data_dir = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    samples = [p.read_bytes() for p in sorted(data_dir.glob("msg_*.txt"))]
    rng = random.Random(42)
    messages = samples[:count]
    messages += [synthetic(i, rng, tmp) for i in range(count - len(messages))]
    return messages


def extract_compat32(raw: bytes) -> None:
    """Read what Posta keeps using compat32 and explicit decoding."""
    msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    for name in ("Message-ID", "In-Reply-To", "References", "Subject", "Date"):
        str(email.header.make_header(email.header.decode_header(msg.get(name) or "")))
    email.utils.getaddresses(msg.get_all("To", []) + msg.get_all("From", []))
    for part in msg.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            if part.get_content_maintype() == "text":
                payload.decode(part.get_content_charset() or "utf-8", "replace")


def extract_default(raw: bytes) -> None:
    """Read what Posta keeps using policy.default's header and content API."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    for name in ("Message-ID", "In-Reply-To", "References", "Subject", "Date"):
        str(msg.get(name) or "")
    for name in ("To", "From"):
        header = msg.get(name)
        if header is not None:
            _ = header.addresses
    for part in msg.walk():
        if not part.is_multipart():
            part.get_content()


def rate(function, messages: list[bytes], rounds: int) -> tuple[float, int]:
    """Return (messages per second, failures) for the best of `rounds` runs."""
    best = float("inf")
    failures = 0
    for _ in range(rounds):
        failures = 0
        start = time.perf_counter()
        for raw in messages:
            try:
                function(raw)
            except Exception:
                failures += 1
        best = min(best, time.perf_counter() - start)
    return len(messages) / best, failures


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    messages = corpus(count)
    size = sum(map(len, messages)) / len(messages)
    print(f"corpus: {len(messages)} messages, mean {size / 1024:.1f} KB")
    runs = [
        (
            "compat32 parse only",
            lambda r: BytesParser(policy=policy.compat32).parsebytes(r),
        ),
        (
            "default  parse only",
            lambda r: BytesParser(policy=policy.default).parsebytes(r),
        ),
        ("compat32 parse+read", extract_compat32),
        ("default  parse+read", extract_default),
        ("posta parse_message (compat32, with sanitize)", parse_message),
    ]
    for label, function in runs:
        per_second, failures = rate(function, messages, rounds)
        print(f"{label:48s} {per_second:9.0f} msgs/s  exceptions: {failures}")


if __name__ == "__main__":
    main()
