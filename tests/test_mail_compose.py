"""Building outgoing messages."""

import base64
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest

from posta.mail.compose import (
    OutgoingAttachment,
    OutgoingMail,
    build_message,
    make_message_id,
    recipients,
    thread_index,
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


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# FILETIME of NOW: 100 ns ticks since 1601-01-01.
NOW_TICKS = 133_590_384_000_000_000


def test_new_thread_index_is_a_22_byte_header():
    index = base64.b64decode(thread_index(None, NOW))
    assert len(index) == 22
    assert index[0] == 0x01
    assert int.from_bytes(index[1:6], "big") == NOW_TICKS >> 24
    assert thread_index(None, NOW) != thread_index(None, NOW)  # a fresh GUID


def test_reply_extends_the_parent_by_one_child_block():
    parent = thread_index(None, NOW)
    reply = base64.b64decode(thread_index(parent, NOW + timedelta(hours=2)))
    assert len(reply) == 27 and reply[:22] == base64.b64decode(parent)
    block = int.from_bytes(reply[22:26], "big")
    assert block >> 31 == 0  # delta code 0: under 1.7 years
    # 31 bits of the time since the header, in units of 2**18 ticks.
    header_ticks = (NOW_TICKS >> 24) << 24
    expected = (NOW_TICKS + 2 * 3600 * 10**7 - header_ticks) >> 18
    assert block == expected
    grandchild = base64.b64decode(thread_index(base64.b64encode(reply).decode(), NOW))
    assert len(grandchild) == 32 and grandchild[:27] == reply


def test_thread_index_far_from_its_header_uses_the_coarse_delta():
    parent = thread_index(None, NOW)
    later = NOW + timedelta(days=800)
    block = int.from_bytes(base64.b64decode(thread_index(parent, later))[22:26], "big")
    assert block >> 31 == 1
    delta = NOW_TICKS + 800 * 86400 * 10**7 - ((NOW_TICKS >> 24) << 24)
    assert block & 0x7FFF_FFFF == (delta >> 23) & 0x7FFF_FFFF


def test_older_outlook_header_layout_is_understood():
    # Outlook before Exchange 2013 wrote the six high bytes of FILETIME.
    old = (NOW_TICKS >> 16).to_bytes(6, "big") + bytes(16)
    reply = base64.b64decode(
        thread_index(base64.b64encode(old).decode(), NOW + timedelta(seconds=60))
    )
    assert int.from_bytes(reply[22:26], "big") == (60 * 10**7) >> 18


@pytest.mark.parametrize("parent", ["", "not base64!", "AQID", None])
def test_invalid_parent_starts_a_new_thread(parent):
    assert len(base64.b64decode(thread_index(parent, NOW))) == 22


def test_thread_headers_are_sent_and_read_back():
    index = thread_index(None, NOW)
    raw = build_message(mail(subject="RE: AW: [T-7] Budget", thread_index=index))
    msg = message_from_bytes(raw)
    assert msg["Thread-Index"] == index
    assert msg["Thread-Topic"] == "Budget"
    assert parse_message(raw).thread_index == index
    assert b"Thread-Index" not in build_message(mail())
    with pytest.raises(ValueError):
        build_message(mail(extra_headers={"Thread-Index": index}))
