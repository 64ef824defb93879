"""Parsing received mail, including the malformed kind, and Message-ID threading."""

import base64
import hashlib
import os
import random
import sysconfig
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from posta.mail import calendar, tnef
from posta.mail.headers import decode_header_noting, resolve_charset
from posta.mail.parse import content_key, parse_message, parse_message_file
from posta.mail.threads import (
    add_task_tag,
    find_task_tag,
    normalize_message_id,
    parse_id_list,
    reference_ids,
    strip_subject_prefixes,
    task_tag,
)
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
    # The forwarded message follows the body, under a header block of its own.
    body, forward = parsed.text.split("---------- Forwarded message ----------")
    assert body.strip() == "Schöne Grüße"
    assert "Subject: inner" in forward and "Inner body" in forward
    assert parsed.auto_submitted is False
    assert parsed.auto_kind is None


def test_html_is_sanitized():
    html = parse_message(MULTIPART).html
    assert "<b>Grüße</b>" in html
    assert "script" not in html and "alert" not in html and "onclick" not in html


def test_attachments_and_inline_parts():
    attachments = parse_message(MULTIPART).attachments
    by_name = {a.filename: a for a in attachments}
    logo = next(a for a in attachments if a.content_id == "logo@example.test")
    # The HTML never shows it, so it is listed with the attachments.
    assert logo.inline is False
    assert logo.content_type == "image/png"
    assert logo.data.startswith(b"\x89PNG")
    pdf = by_name["Übersicht Q1.pdf"]
    assert (pdf.inline, pdf.data) == (False, b"%PDF-1.4\n")
    # Directory parts of a hostile filename are dropped.
    assert by_name["paß"].data == b"secret"
    inner = next(a for a in attachments if a.content_type == "message/rfc822")
    assert b"Inner body" in inner.data
    assert inner.filename == "inner.eml"
    assert all(a.size == len(a.data) for a in attachments)


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
        # Nothing of this decodes to text, so the word is kept as it was.
        "=?utf-8?b?!!!notbase64?=": "=?utf-8?b?!!!notbase64?=",
        "=?utf-8?b?w6k?=": "é",
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


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("gb2312", "gb18030"),
        ("GBK", "gb18030"),
        ("ks_c_5601-1987", "cp949"),
        ("windows-874", "cp874"),
        ("iso-8859-8-i", "iso8859-8"),
        ("unicode-1-1-utf-7", "utf-7"),
        ("x-unknown", "utf-8"),
        ('"ISO-8859-1"', "cp1252"),
        ("us-ascii", "utf-8"),
        ("shift_jis", "cp932"),
        ("x-no-such-charset", None),
    ],
)
def test_charset_labels_resolve(label, codec):
    assert resolve_charset(label) == codec


def test_header_decoding_notes_what_it_repaired():
    assert decode_header_noting("=?utf-8?q?fine?=") == ("fine", [])
    text, notes = decode_header_noting("=?x-bogus?q?caf=E9?=")
    assert text == "café" and notes == ["unknown charset 'x-bogus'"]
    text, notes = decode_header_noting("=?utf-8?b?w6nDqQ=?=")
    assert text == "éé" and notes == ["broken base64 in encoded word"]


def test_normalize_message_id():
    assert normalize_message_id(" <a@b.test> ") == "<a@b.test>"
    assert normalize_message_id("a@b.test") == "<a@b.test>"
    assert normalize_message_id("junk <x@y> more") == "<x@y>"
    assert normalize_message_id("<a@b\r\n .test>") == "<a@b.test>"
    assert normalize_message_id("") is None
    assert normalize_message_id(None) is None
    assert normalize_message_id("no id here") is None
    assert normalize_message_id("<open@example.test") == "<open@example.test>"
    assert normalize_message_id("id@host.test (Exchange)") == "<id@host.test>"
    assert normalize_message_id("<>") is None


def test_parse_id_list_dedupes_in_order():
    assert parse_id_list("<a@x> <b@x>\r\n <a@x>") == ["<a@x>", "<b@x>"]


def test_reference_ids_most_recent_first():
    ids = reference_ids("<parent@x>", ["<root@x>", "<mid@x>", "<parent@x>"])
    assert ids == ["<parent@x>", "<mid@x>", "<root@x>"]
    assert reference_ids(None, "<root@x> <mid@x>") == ["<mid@x>", "<root@x>"]
    assert reference_ids("parent@x", None) == ["<parent@x>"]
    assert reference_ids(None, None) == []


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: AW: Fwd: Budget", "Budget"),
        ("RE[2]: Re(3): Re^4: Budget", "Budget"),
        ("SV: VS: Rif: R: TR: WG: FW: RV: Budget", "Budget"),
        ("Réf : Antw: Doorst: Budget", "Budget"),
        ("[dev-list] Re: [T-7] Budget", "Budget"),
        ("回复：Budget", "Budget"),
        ("Re:Budget  plan", "Budget plan"),
        ("Reply needed", "Reply needed"),
        ("Resume: R2D2 Fwdable", "Resume: R2D2 Fwdable"),
        ("", ""),
        (None, ""),
    ],
)
def test_strip_subject_prefixes(subject, base):
    assert strip_subject_prefixes(subject) == base


def test_task_tags():
    assert task_tag(42) == "[T-42]"
    assert find_task_tag("Re: [t-42] Budget") == 42
    assert find_task_tag("Re: [T-] Budget [T-x]") is None
    assert find_task_tag(None) is None
    tagged = add_task_tag("Budget", 42)
    assert tagged == "[T-42] Budget"
    assert add_task_tag(tagged, 42) == tagged
    assert add_task_tag("Re: [T-41] Budget", 42) == "Re: [T-42] Budget"
    assert add_task_tag("", 5) == "[T-5]"


def test_calendar_reader_is_tolerant():
    ics = (
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY;LANGUAGE=de:Kick\\, off\n"
        "DTSTART;VALUE=DATE:20240506\nDTEND;VALUE=DATE:20240507\n"
        "LOCATION:Caf\n \u00e9 \\n Hof\nX-BROKEN LINE WITHOUT COLON\n"
        "DTSTAMP:garbage\nEND:VEVENT\nBEGIN:VEVENT\nSUMMARY:Call\n"
        'DTSTART;TZID="W. Europe Standard Time":20240507T090000\n'
        "DTSTART;TZID=America/New_York:20240507T090000\nEND:VEVENT\n"
    )
    first, second = calendar.parse_events(ics)
    assert first.summary == "Kick, off"
    assert (first.start, first.end) == (date(2024, 5, 6), date(2024, 5, 7))
    assert first.location == "Café \n Hof"
    assert second.start == datetime(2024, 5, 7, 9, tzinfo=ZoneInfo("America/New_York"))
    summary = calendar.summarize(ics)
    assert "Meeting: Kick, off\nWhen: 2024-05-06 – 2024-05-07" in summary
    assert "Meeting: Call\nWhen: 2024-05-07 09:00 (America/New_York)" in summary
    assert calendar.summarize("not a calendar") == ""


def test_rtf_decompression_matches_the_ms_oxrtfcp_example():
    compressed = bytes.fromhex(
        "2d0000002b0000004c5a4675f1c5c7a703000a0072637067313235423"
        "20af32068656c090020627705b06c647d0a800fa0"
    )
    rtf = tnef.decompress_rtf(compressed)
    assert rtf == b"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n"
    assert tnef.rtf_to_text(rtf) == ("hello world", None)
    with pytest.raises(ValueError):
        tnef.decompress_rtf(b"short")


def test_rtf_with_encapsulated_html():
    rtf = (
        rb"{\rtf1\ansi\ansicpg1252\fromhtml1 {\fonttbl{\f0 Arial;}}"
        rb"{\*\htmltag64 <html><body>}\htmlrtf {\b RTF only\htmlrtf0 "
        rb"{\*\htmltag84 <b>}Gr\'fc\'dfe{\*\htmltag92 </b>}\htmlrtf }\htmlrtf0 "
        rb"{\*\htmltag </body></html>}}"
    )
    assert tnef.rtf_to_text(rtf) == ("", "<html><body><b>Grüße</b></body></html>")


def test_broken_tnef_stays_an_attachment():
    raw = (
        b"From: a@example.test\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain'
        b"\n\nBody\n--b\nContent-Type: application/ms-tnef; name=winmail.dat\n"
        b"Content-Transfer-Encoding: base64\n\nbm90IHRuZWY=\n--b--\n"
    )
    parsed = parse_message(raw)
    assert parsed.text.strip() == "Body"
    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert any(defect.startswith("tnef:") for defect in parsed.defects)


def write_big_message(path: Path, data: bytes) -> None:
    """Write a message carrying `data` as a base64 attachment, in slices."""
    with path.open("wb") as out:
        out.write(
            b"From: a@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\n\r\nSee attachment.\r\n--b\r\n"
            b"Content-Type: application/zip\r\n"
            b'Content-Disposition: attachment; filename="big.zip"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        for start in range(0, len(data), 57 * 1024):
            chunk = base64.encodebytes(data[start : start + 57 * 1024])
            out.write(chunk.replace(b"\n", b"\r\n"))
        out.write(b"--b--\r\n")


def test_30_mb_attachment_is_spooled_intact(tmp_path):
    data = random.Random(5).randbytes(30 * 1024 * 1024 + 7)
    path = tmp_path / "big.eml"
    write_big_message(path, data)
    spool = tmp_path / "spool"
    spool.mkdir()
    parsed = parse_message_file(str(path), str(spool))
    assert parsed.text.strip() == "See attachment."
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.data, attachment.size) == (
        "big.zip",
        b"",
        len(data),
    )
    assert Path(attachment.path).parent == spool
    digest = hashlib.sha256(Path(attachment.path).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(data).hexdigest()
    assert parsed.dedupe_key == content_key(path.read_bytes())


def test_spool_header_in_received_mail_is_not_trusted(tmp_path):
    raw = (
        b"From: a@example.test\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain'
        b"\n\nBody\n--b\nContent-Type: application/pdf; name=a.pdf\n"
        b"X-Posta-Spool: 0\n\n%PDF-1.4 small\n--b--\n"
    )
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    parsed = parse_message_file(str(path), str(tmp_path), threshold=4)
    (attachment,) = parsed.attachments
    assert attachment.path and Path(attachment.path).read_bytes() == b"%PDF-1.4 small"
    assert parse_message(raw).attachments[0].path is None


def test_spooling_keeps_crlf_and_odd_structure(tmp_path):
    payload = os.urandom(3000)
    raw = (
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\npreamble\r\n"
        b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        b"--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        # The inner multipart is never closed; the outer boundary ends it.
        b"--outer\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--outer--\r\nepilogue\r\n"
    )
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    spooled = parse_message_file(str(path), str(tmp_path), threshold=100)
    in_memory = parse_message(raw)
    assert spooled.text == in_memory.text == "hello"
    assert Path(spooled.attachments[0].path).read_bytes() == payload
    assert in_memory.attachments[0].data == payload
    assert spooled.dedupe_key == in_memory.dedupe_key
