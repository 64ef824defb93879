"""Parsing received mail, including the malformed kind, and Message-ID threading."""

import random
import sysconfig
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posta.mail.parse import parse_message
from posta.mail.threads import normalize_message_id, parse_id_list, reference_ids
from tests.mail_samples import raw_message

MULTIPART = b"""\
From: =?utf-8?q?Zo=C3=AB?= Example <Zoe@Example.TEST>
To: "Team" <team@posta.test>, bob@example.test
Cc: =?iso-8859-1?q?Ren=E9?= <rene@example.test>
Subject: =?utf-8?b?UmU6IEdyw7w=?= =?utf-8?b?w59lIGF1cyBUw7xi?=
 =?utf-8?q?ingen?=
Date: Wed, 01 May 2024 14:00:00 +0200
Message-ID: <reply-1@example.test>
In-Reply-To: <task-42@posta.test>
References: <root@posta.test>
 <task-42@posta.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Sch=C3=B6ne Gr=C3=BC=C3=9Fe
--alt
Content-Type: text/html; charset=utf-8

<p onclick="steal()">Sch\xc3\xb6ne <b>Gr\xc3\xbc\xc3\x9fe</b>
<script>alert(1)</script></p>
--alt--
--outer
Content-Type: image/png
Content-Disposition: inline
Content-ID: <logo@example.test>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer
Content-Type: application/pdf
Content-Disposition: attachment; filename*=utf-8''%C3%9Cbersicht%20Q1.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="=?utf-8?q?../../etc/pa=C3=9F?="
Content-Transfer-Encoding: base64

c2VjcmV0
--outer
Content-Type: message/rfc822

From: forwarded@example.test
Subject: inner

Inner body must not become the body.
--outer--
"""


def test_multipart_message_fields():
    parsed = parse_message(MULTIPART)
    assert parsed.message_id == "<reply-1@example.test>"
    assert parsed.dedupe_key == "<reply-1@example.test>"
    assert parsed.in_reply_to == "<task-42@posta.test>"
    assert parsed.references == ["<root@posta.test>", "<task-42@posta.test>"]
    assert parsed.subject == "Re: Grüße aus Tübingen"
    assert (parsed.from_name, parsed.from_addr) == ("Zoë Example", "zoe@example.test")
    assert parsed.to == [("Team", "team@posta.test"), ("", "bob@example.test")]
    assert parsed.cc == [("René", "rene@example.test")]
    assert parsed.date == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parsed.text.strip() == "Schöne Grüße"
    assert parsed.auto_submitted is False


def test_html_is_sanitized():
    html = parse_message(MULTIPART).html
    assert "<b>Grüße</b>" in html
    assert "script" not in html and "alert" not in html and "onclick" not in html


def test_attachments_and_inline_parts():
    attachments = parse_message(MULTIPART).attachments
    by_name = {a.filename: a for a in attachments}
    logo = next(a for a in attachments if a.content_id == "logo@example.test")
    assert logo.inline is True
    assert logo.content_type == "image/png"
    assert logo.data.startswith(b"\x89PNG")
    pdf = by_name["Übersicht Q1.pdf"]
    assert (pdf.inline, pdf.data) == (False, b"%PDF-1.4\n")
    # Directory parts of a hostile filename are dropped.
    assert by_name["paß"].data == b"secret"
    inner = next(a for a in attachments if a.content_type == "message/rfc822")
    assert b"Inner body" in inner.data
    assert inner.filename.endswith(".eml")


def test_text_derived_from_html_only_message():
    raw = (
        b"From: a@example.test\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>p{}</style></head><body><p>First</p>"
        b"<p>Second &amp; last</p><script>x()</script></body></html>"
    )
    parsed = parse_message(raw)
    assert parsed.text == "First\n\nSecond & last"
    assert "<p>First</p>" in parsed.html


def test_missing_message_id_gets_stable_content_key():
    raw = raw_message(message_id=None)
    first = parse_message(raw)
    assert first.message_id is None
    assert first.dedupe_key.startswith("sha256:")
    assert parse_message(raw).dedupe_key == first.dedupe_key
    # The same message with LF line ends (another server's storage) matches too.
    assert parse_message(raw.replace(b"\r\n", b"\n")).dedupe_key == first.dedupe_key
    other = parse_message(raw_message(message_id=None, body="Other.\n"))
    assert other.dedupe_key != first.dedupe_key


def test_malformed_message_id_falls_back_to_content_key():
    parsed = parse_message(raw_message(message_id="not an id"))
    assert parsed.message_id is None
    assert parsed.dedupe_key.startswith("sha256:")


def test_encoded_words_edge_cases():
    cases = {
        # A UTF-8 character split across two encoded words.
        "=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=": "éé",
        "=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=": "café",
        "Re: =?UTF-8?Q?Caf=C3=A9?= time": "Re: Café time",
        "=?unknown-charset?q?plain?=": "plain",
        "=?utf-8?b?!!!notbase64?=": "=?utf-8?b?!!!notbase64?=",
        "=?utf-8*en?q?lang_tag?=": "lang tag",
        "=?windows-1252?q?=93quoted=94?=": "\u201cquoted\u201d",
    }
    for encoded, expected in cases.items():
        assert parse_message(raw_message(subject=encoded)).subject == expected


def test_raw_8bit_headers_are_decoded():
    raw = raw_message(subject="Grüße", sender="Zoë <zoe@example.test>")
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße"
    assert parsed.from_name == "Zoë"


def test_latin1_body_is_decoded():
    raw = (
        b"From: a@example.test\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 \x80 5\r\n"
    )
    assert parse_message(raw).text.strip() == "Café € 5"


def test_date_without_zone_is_utc_and_bad_date_is_none():
    no_zone = parse_message(raw_message(extra="X-Note: 1").replace(b"+0000", b"-0000"))
    assert no_zone.date.tzinfo is not None
    bad = raw_message().replace(b"Date: Wed, 01 May 2024", b"Date: someday")
    assert parse_message(bad).date is None


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied",
        "Precedence: bulk",
        "X-Autoreply: yes",
    ],
)
def test_auto_submitted_detected(extra):
    assert parse_message(raw_message(extra=extra)).auto_submitted is True


def test_auto_submitted_no_is_human():
    raw = raw_message(extra="Auto-Submitted: no")
    assert parse_message(raw).auto_submitted is False


MALFORMED = [
    b"",
    b"\x00\xff\xfe garbage without headers",
    b"Subject: only headers, no blank line",
    b"From: <<<@@@>>>\r\nTo: ,,,;;\r\nDate: 99 Foo 99999 99:99:99\r\n\r\nx",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain"
    b"\r\n\r\nno closing boundary",
    b"Content-Type: multipart/mixed\r\n\r\nmultipart without boundary",
    b"Content-Type: text/plain; charset=bogus-42\r\nContent-Transfer-Encoding: "
    b"base64\r\n\r\n!!!not base64!!!",
    b"Content-Type: text/html\r\n\r\n<div><p><b><i>" + b"<div>" * 5000,
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 200,
    b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n"
    b"Content-Type: application/x; name*0*=utf-8''a; name*2=c\r\n\r\ndata",
    b"Subject: =?utf-8?q?unterminated\r\nMessage-ID: <a@b\r\n\r\nbody",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_input_never_raises(raw):
    parsed = parse_message(raw)
    assert isinstance(parsed.text, str)
    assert parsed.dedupe_key


def test_malformed_input_records_defects():
    parsed = parse_message(MALFORMED[4])
    assert parsed.defects
    assert "no closing boundary" in parsed.text
    assert parse_message(MALFORMED[6]).defects


def test_cpython_samples_and_truncations_never_raise():
    data_dir = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    samples = [p.read_bytes() for p in sorted(data_dir.glob("msg_*.txt"))]
    samples.append(MULTIPART)
    rng = random.Random(7)
    parsed = 0
    for raw in samples:
        for cut in {len(raw), *(rng.randrange(len(raw) + 1) for _ in range(5))}:
            assert parse_message(raw[:cut]).dedupe_key
            parsed += 1
    assert parsed > 50


def test_normalize_message_id():
    assert normalize_message_id(" <a@b.test> ") == "<a@b.test>"
    assert normalize_message_id("a@b.test") == "<a@b.test>"
    assert normalize_message_id("junk <x@y> more") == "<x@y>"
    assert normalize_message_id("<a@b\r\n .test>") == "<a@b.test>"
    assert normalize_message_id("") is None
    assert normalize_message_id(None) is None
    assert normalize_message_id("no id here") is None


def test_parse_id_list_dedupes_in_order():
    assert parse_id_list("<a@x> <b@x>\r\n <a@x>") == ["<a@x>", "<b@x>"]


def test_reference_ids_most_recent_first():
    ids = reference_ids("<parent@x>", ["<root@x>", "<mid@x>", "<parent@x>"])
    assert ids == ["<parent@x>", "<mid@x>", "<root@x>"]
    assert reference_ids(None, "<root@x> <mid@x>") == ["<mid@x>", "<root@x>"]
    assert reference_ids("parent@x", None) == ["<parent@x>"]
    assert reference_ids(None, None) == []
