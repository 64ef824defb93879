"""Building outgoing messages."""

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from posta.mail.compose import (
    OutgoingAttachment,
    OutgoingMail,
    build_message,
    make_message_id,
    recipients,
)
from posta.mail.parse import parse_message


def mail(**changes) -> OutgoingMail:
    fields = {
        "from_addr": "team@posta.test",
        "from_name": "Équipe Posta",
        "to": ["Zoë <zoe@example.test>"],
        "cc": ["bob@example.test"],
        "bcc": ["hidden@example.test", "ZOE@example.test"],
        "subject": "Über den Task #7",
        "text": "Grüße\n",
        "message_id": "<out-7@posta.test>",
        "in_reply_to": "<in-3@example.test>",
        "references": ["<root@posta.test>", "<in-3@example.test>"],
        "date": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    return OutgoingMail(**(fields | changes))


def test_headers_are_ascii_and_round_trip():
    raw = build_message(mail())
    assert raw.isascii()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = parse_message(raw)
    assert parsed.subject == "Über den Task #7"
    assert (parsed.from_name, parsed.from_addr) == ("Équipe Posta", "team@posta.test")
    assert parsed.message_id == "<out-7@posta.test>"
    assert parsed.in_reply_to == "<in-3@example.test>"
    assert parsed.references == ["<root@posta.test>", "<in-3@example.test>"]
    assert parsed.date == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parsed.text == "Grüße\n"


def test_bcc_not_in_headers_but_in_recipients():
    raw = build_message(mail())
    assert b"hidden@example.test" not in raw
    assert recipients(mail()) == [
        "zoe@example.test",
        "bob@example.test",
        "hidden@example.test",
    ]


def test_html_alternative_and_attachment(tmp_path):
    path = tmp_path / "plan.pdf"
    path.write_bytes(b"%PDF-1.4 plan")
    raw = build_message(
        mail(
            html="<p>Grüße</p>",
            attachments=[OutgoingAttachment("Übersicht 2024.pdf", "application/pdf",
                                            str(path))],
        )
    )  # fmt: skip
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Grüße</p>"
    assert b"filename*=utf-8''%C3%9Cbersicht%202024.pdf" in raw
    attachment = parse_message(raw).attachments[0]
    assert (attachment.filename, attachment.data) == (
        "Übersicht 2024.pdf",
        path.read_bytes(),
    )


def test_extra_headers_cannot_override_managed_ones():
    raw = build_message(mail(extra_headers={"Auto-Submitted": "auto-generated"}))
    assert b"Auto-Submitted: auto-generated" in raw
    with pytest.raises(ValueError):
        build_message(mail(extra_headers={"Bcc": "x@example.test"}))


def test_header_injection_refused():
    with pytest.raises(ValueError):
        build_message(mail(subject="hi\r\nBcc: victim@example.test"))


def test_make_message_id_is_unique_and_well_formed():
    ids = {make_message_id("Posta.Test") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("<") and i.endswith("@posta.test>") for i in ids)
