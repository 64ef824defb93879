"""The TNEF corpus cases: the streams in tests/mail/tnef-*.eml and what they hold."""

import hashlib

from tests.mail_tnef import (
    PR_BODY_HTML,
    PR_INTERNET_CPID,
    PR_RTF_COMPRESSED,
    PT_BINARY,
    PT_LONG,
    mela_rtf,
    tnef,
)

PDF = b"%PDF-1.4\n% TNEF attachment\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
RTF = (
    rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Arial;}}"
    rb"{\colortbl;\red0\green0\blue0;}\pard\f0\fs20 Caf\'e9 meeting notes:\par "
    rb"\tab budget approved \u8364?5k\par}"
)


def _file(filename: str, content_type: str, data: bytes, inline=False, cid=None):
    expected = {
        "filename": filename,
        "content_type": content_type,
        "inline": inline,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if cid:
        expected["content_id"] = cid
    return expected


TNEF_CASES = {
    "tnef-attachments": (
        "Quarterly report",
        tnef(
            "Quarterly report",
            body="Hello from Outlook.\r\nThe report is attached.",
            files=[
                ("Q2 report.pdf", "application/pdf", PDF, None),
                ("diagram.png", "image/png", PNG, None),
            ],
        ),
        {
            "text_contains": ["Hello from Outlook.\nThe report is attached."],
            "attachments": [
                _file("Q2 report.pdf", "application/pdf", PDF),
                _file("diagram.png", "image/png", PNG),
            ],
        },
    ),
    "tnef-html-body": (
        "HTML from Outlook",
        tnef(
            "HTML from Outlook",
            props=[
                (PT_LONG, PR_INTERNET_CPID, 65001),
                (
                    PT_BINARY,
                    PR_BODY_HTML,
                    '<html><body><p>Grüße aus <b>Outlook</b></p><img src="cid:'
                    'image001.png@01DA"><script>alert(1)</script></body></html>'.encode(),
                ),
            ],
            files=[("image001.png", "image/png", PNG, "image001.png@01DA")],
        ),
        {
            "text_contains": ["Grüße aus Outlook"],
            "html_contains": ["<b>Outlook</b>", 'src="cid:image001.png@01DA"'],
            "html_excludes": ["<script", "alert"],
            "attachments": [
                _file("image001.png", "image/png", PNG, True, "image001.png@01DA")
            ],
        },
    ),
    "tnef-rtf-body": (
        "RTF from Outlook",
        tnef(
            "RTF from Outlook",
            props=[(PT_BINARY, PR_RTF_COMPRESSED, mela_rtf(RTF))],
        ),
        {
            "text_contains": ["Café meeting notes:\n\tbudget approved €5k"],
            "text_excludes": ["Arial", "rtf1"],
            "html": None,
            "attachments": [],
        },
    ),
}
