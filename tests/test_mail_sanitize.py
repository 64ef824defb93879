"""HTML sanitizing of received mail and HTML-to-text rendering."""

import pytest

from posta.mail.sanitize import html_to_text, sanitize_html

DANGEROUS = {
    "script": '<p>hi</p><script>alert("x")</script>',
    "uppercase script": "<SCRIPT SRC=//evil.test/x.js></SCRIPT><p>hi</p>",
    "event handler": '<img src="https://img.test/a.png" onerror="alert(1)">',
    "body onload": '<body onload="alert(1)"><p>hi</p></body>',
    "javascript url": '<a href="javascript:alert(1)">x</a>',
    "obfuscated javascript url": '<a href="jav&#x09;ascript:alert(1)">x</a>',
    "iframe": '<iframe src="https://evil.test/"></iframe><p>hi</p>',
    "form": '<form action="https://evil.test/"><input name="pw"><button>Go</button>'
    "</form>",
    "meta refresh": '<meta http-equiv="refresh" content="0;url=https://evil.test/">',
    "svg script": "<svg><script>alert(1)</script><circle r=1 /></svg>",
    "svg onload": '<svg onload="alert(1)"></svg>',
    "object": '<object data="https://evil.test/x.swf"></object>',
    "embed": '<embed src="https://evil.test/x.swf">',
    "style tag": "<style>body{background:url(https://evil.test/)}</style>",
    "link stylesheet": '<link rel="stylesheet" href="https://evil.test/x.css">',
    "data html url": '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    "data svg image": '<img src="data:image/svg+xml;base64,PHN2Zz4=">',
}
FORBIDDEN_TOKENS = [
    "<script", "alert", "onerror", "onload", "javascript", "<iframe", "<form",
    "<input", "<meta", "<svg", "<object", "<embed", "<style", "<link", "evil.test",
    "data:text", "data:image/svg",
]  # fmt: skip


@pytest.mark.parametrize("html", DANGEROUS.values(), ids=DANGEROUS.keys())
def test_dangerous_markup_removed(html):
    clean = sanitize_html(html).lower()
    assert not [token for token in FORBIDDEN_TOKENS if token in clean]


def test_links_open_safely_in_new_tab():
    clean = sanitize_html('<a href="https://example.test/x">x</a>')
    assert 'href="https://example.test/x"' in clean
    assert 'rel="noopener noreferrer"' in clean
    assert 'target="_blank"' in clean


def test_formatting_tables_and_images_kept():
    html = (
        '<table border="1"><tr><td colspan="2" style="color: red">cell</td></tr>'
        '</table><p><b>bold</b> <i>it</i></p><img src="cid:logo@x" alt="logo">'
        '<img src="https://img.test/a.png"><img src="data:image/png;base64,iVBO">'
    )
    clean = sanitize_html(html)
    for kept in [
        'colspan="2"', 'style="color:red"', "<b>bold</b>", "<i>it</i>",
        'src="cid:logo@x"', 'src="https://img.test/a.png"',
        'src="data:image/png;base64,iVBO"',
    ]:  # fmt: skip
        assert kept in clean


def test_overlaying_styles_removed():
    clean = sanitize_html('<div style="position:fixed;z-index:9;color:blue">x</div>')
    assert "position" not in clean and "z-index" not in clean
    assert "color:blue" in clean


def test_html_to_text():
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Hello &amp; welcome</p><ul><li>one</li><li>two</li></ul>"
        "line<br>break<table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    assert html_to_text(html) == (
        "Hello & welcome\n\n- one\n- two\n\nline\nbreak\n\na b"
    )


def test_html_to_text_on_broken_markup():
    assert (
        html_to_text("<p>unclosed <b>bold <i>x</p></div></span>") == "unclosed bold x"
    )
