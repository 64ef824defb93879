"""The real-world mail corpus: every tests/mail/<case>.eml against its .json.

Each case's expected-result file lists only what the case is about; keys:
subject, from_name, from_addr, to, message_id, in_reply_to, thread_index,
text_contains / text_excludes, html (null: no HTML part), html_contains /
html_excludes, attachments (the exact list, in order, each with filename,
content_type, inline, optional size, sha256, content_id), defects (bool),
defects_contain, auto_kind, auto_submitted, bounce, dedupe ("message_id" or
"content"), has_remote_images, task_tag, base_subject, keeps_encoded_word.
"""

import base64
import hashlib
import json
from collections import Counter
from email import message_from_bytes
from pathlib import Path

import pytest

from posta.mail.parse import ParsedMessage, parse_message, parse_message_file
from posta.mail.threads import find_task_tag, strip_subject_prefixes
from tests.mail_tnef_cases import TNEF_CASES

CORPUS = Path(__file__).parent / "mail"
CASES = sorted(path.stem for path in CORPUS.glob("*.eml"))
KINDS = ("headers", "body", "attach", "id", "auto", "bounce", "thread", "tnef")


def load(name: str) -> tuple[bytes, dict]:
    raw = (CORPUS / f"{name}.eml").read_bytes()
    return raw, json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))


def test_corpus_covers_every_kind():
    kinds = Counter(name.split("-")[0] for name in CASES)
    assert len(CASES) >= 40
    assert set(kinds) == set(KINDS), kinds
    assert all((CORPUS / f"{name}.json").exists() for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_case(name):
    raw, expected = load(name)
    parsed = parse_message(raw)
    check_headers(parsed, expected)
    check_bodies(parsed, expected)
    check_attachments(parsed, expected)
    check_defects(parsed, expected)
    check_auto(parsed, expected)
    check_dedupe(raw, parsed, expected)
    if "task_tag" in expected:
        assert find_task_tag(parsed.subject) == expected["task_tag"]
    if "base_subject" in expected:
        assert strip_subject_prefixes(parsed.subject) == expected["base_subject"]


def check_headers(parsed: ParsedMessage, expected: dict) -> None:
    for key in ("subject", "from_name", "from_addr", "message_id", "in_reply_to"):
        if key in expected:
            assert getattr(parsed, key) == expected[key], key
    if "thread_index" in expected:
        assert parsed.thread_index == expected["thread_index"]
    if "to" in expected:
        assert [list(pair) for pair in parsed.to] == expected["to"]
    shown = parsed.subject + parsed.from_name
    assert "\ufffd" not in shown
    if not expected.get("keeps_encoded_word"):
        assert "=?" not in shown


def check_bodies(parsed: ParsedMessage, expected: dict) -> None:
    for snippet in expected.get("text_contains", []):
        assert snippet in parsed.text
    for snippet in expected.get("text_excludes", []):
        assert snippet not in parsed.text
    if "html" in expected:
        assert parsed.html == expected["html"]
    for snippet in expected.get("html_contains", []):
        assert snippet in parsed.html
    for snippet in expected.get("html_excludes", []):
        assert snippet not in (parsed.html or "")
    if "has_remote_images" in expected:
        assert parsed.has_remote_images is expected["has_remote_images"]


def check_attachments(parsed: ParsedMessage, expected: dict) -> None:
    if "attachments" not in expected:
        return
    assert len(parsed.attachments) == len(expected["attachments"])
    for got, want in zip(parsed.attachments, expected["attachments"], strict=True):
        assert got.filename == want["filename"]
        assert got.content_type == want["content_type"]
        assert got.inline is want["inline"], got.filename
        assert got.size == len(got.data)
        if "size" in want:
            assert got.size == want["size"]
        if "sha256" in want:
            assert hashlib.sha256(got.data).hexdigest() == want["sha256"]
        if "content_id" in want:
            assert got.content_id == want["content_id"]


def check_defects(parsed: ParsedMessage, expected: dict) -> None:
    if "defects" in expected:
        assert bool(parsed.defects) is expected["defects"], parsed.defects
    for note in expected.get("defects_contain", []):
        assert any(note in defect for defect in parsed.defects), parsed.defects


def check_auto(parsed: ParsedMessage, expected: dict) -> None:
    if "auto_kind" in expected:
        assert parsed.auto_kind == expected["auto_kind"]
    if "auto_submitted" in expected:
        assert parsed.auto_submitted is expected["auto_submitted"]
    if "bounce" not in expected:
        return
    want = expected["bounce"]
    if want is None:
        assert parsed.bounce is None
        return
    assert parsed.bounce.original_message_id == want["original_message_id"]
    assert parsed.bounce.recipients == want["recipients"]
    assert parsed.bounce.status == want["status"]
    if "diagnostic_contains" in want:
        assert want["diagnostic_contains"] in parsed.bounce.diagnostic


def check_dedupe(raw: bytes, parsed: ParsedMessage, expected: dict) -> None:
    assert parse_message(raw).dedupe_key == parsed.dedupe_key
    kind = expected.get("dedupe")
    if kind == "message_id":
        assert parsed.dedupe_key == parsed.message_id
    elif kind == "content":
        assert parsed.dedupe_key.startswith("sha256:")
        assert parse_message(raw + b"x").dedupe_key != parsed.dedupe_key
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert parse_message(crlf).dedupe_key == parsed.dedupe_key


@pytest.mark.parametrize("name", CASES)
def test_spooled_parse_matches_in_memory(name, tmp_path):
    """Spooling every part body over 64 bytes changes nothing but where bytes live."""
    raw, _expected = load(name)
    in_memory = parse_message(raw)
    spooled = parse_message_file(
        str(CORPUS / f"{name}.eml"), str(tmp_path), threshold=64
    )
    assert spooled.dedupe_key == in_memory.dedupe_key
    assert (spooled.subject, spooled.text, spooled.html, spooled.auto_kind) == (
        in_memory.subject,
        in_memory.text,
        in_memory.html,
        in_memory.auto_kind,
    )
    assert [describe(a) for a in spooled.attachments] == [
        describe(a) for a in in_memory.attachments
    ]


def describe(attachment) -> tuple:
    """Return what must not depend on spooling, content as a digest."""
    data = Path(attachment.path).read_bytes() if attachment.path else attachment.data
    assert len(data) == attachment.size
    if attachment.content_type == "message/rfc822":
        data = b""  # a forward's .eml holds the spool stand-ins, not the bytes
    return (
        attachment.filename,
        attachment.content_type,
        attachment.inline,
        attachment.content_id,
        hashlib.sha256(data).hexdigest(),
    )


@pytest.mark.parametrize("name", sorted(TNEF_CASES))
def test_tnef_cases_come_from_the_builder(name):
    """The committed winmail.dat streams are exactly what tests/mail_tnef.py builds."""
    raw, _expected = load(name)
    part = next(
        p for p in message_from_bytes(raw).walk() if p.get_filename() == "winmail.dat"
    )
    assert part.get_payload(decode=True) == TNEF_CASES[name][1]
    assert base64.b64encode(TNEF_CASES[name][1])[:8] == b"eJ8+IgEA"
