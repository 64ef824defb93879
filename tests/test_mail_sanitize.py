"""HTML sanitizing of received mail and HTML-to-text rendering."""

import pytest

from posta.mail.sanitize import (
    has_remote_images,
    html_to_text,
    referenced_content_ids,
    sanitize_html,
    show_remote_images,
)

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
    "mixed case javascript": '<a href="JaVaScRiPt:alert(1)">x</a>',
    "entity encoded javascript": (
        '<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;'
        '&#x3A;alert(1)">x</a>'
    ),
    "decimal entities no semicolons": (
        '<a href="&#106&#97&#118&#97&#115&#99&#114&#105&#112&#116&#58alert(1)">x</a>'
    ),
    "newline in scheme": '<a href="java\nscript:alert(1)">x</a>',
    "leading space scheme": '<a href="  javascript:alert(1)">x</a>',
    "vbscript url": '<a href="vbscript:msgbox(1)">x</a>',
    "data url in link": '<a href="DATA:text/html,<script>alert(1)</script>">x</a>',
    "svg use": '<svg><use href="data:image/svg+xml,<svg id=x onload=alert(1)>#x">',
    "svg foreignobject": (
        "<svg><foreignObject><iframe src=javascript:alert(1)></iframe>"
        "</foreignObject></svg>"
    ),
    "svg animate": '<svg><animate onbegin="alert(1)" attributeName=x></svg>',
    "css url": '<p style="background-image:url(javascript:alert(1))">x</p>',
    "css expression": '<p style="width:expression(alert(1))">x</p>',
    "css import": "<p style=\"@import 'https://evil.test/x.css'\">x</p>",
    "css escaped url": '<p style="list-style:\\75rl(https://evil.test/)">x</p>',
    "css behavior": '<p style="behavior:url(evil.htc)">x</p>',
    "input autofocus": '<input autofocus onfocus="alert(1)">',
    "button formaction": '<button formaction="javascript:alert(1)">Go</button>',
    "form in table": '<table><form action="https://evil.test/"><tr><td>x</td></tr>'
    "</form></table>",
    "base href": '<base href="https://evil.test/"><a href="x">x</a>',
    "iframe srcdoc": '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "object data": '<object data="javascript:alert(1)"></object>',
    "embed swf": '<embed src="https://evil.test/a.swf" type="application/x-shockwave">',
    "link import": '<link rel="import" href="https://evil.test/x.html">',
    "template": "<template><script>alert(1)</script></template>",
    "mathml href": '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    "mathml mglyph style": (
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>"
        "</style></mglyph></table></mtext></math>"
    ),
    "noscript mutation": (
        '<noscript><p title="</noscript><img src=x onerror=alert(1)>">'
    ),
    "unclosed script": "<p>hi<script>alert(1)",
    "unclosed comment": "<p>hi</p><!-- <script>alert(1)</script>",
    "comment trick": "<!--><script>alert(1)</script>-->",
    "conditional comment": "<!--[if IE]><script>alert(1)</script><![endif]-->",
    "event on any tag": '<div onmouseover="alert(1)">x</div>',
    "img srcset": '<img srcset="https://evil.test/a.png 1x">',
    "relative src": '<img src="/logout">',
    "protocol relative": '<a href="//evil.test/">x</a>',
    "meta charset trick": '<meta charset="utf-7"><p>+ADw-script+AD4-</p>',
    "style in body": "<p>x</p><style>@import url(https://evil.test/x.css);</style>",
    "xml namespace": (
        '<x:script xmlns:x="http://www.w3.org/1999/xhtml" src="https://evil.test/x.js">'
        "</x:script>"
    ),
}
FORBIDDEN_TOKENS = [
    "<script", "alert", "onerror", "onload", "javascript", "<iframe", "<form",
    "<input", "<meta", "<svg", "<object", "<embed", "<style", "<link", "evil.test",
    "data:text", "data:image/svg", "vbscript", "expression", "url(", "@import",
    "behavior", "<button", "formaction", "<base", "srcdoc", "<template", "<math",
    "onmouseover", "onfocus", "onbegin", "srcset", "/logout", "<noscript", "xlink",
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
        'src="cid:logo@x"', 'src="data:image/png;base64,iVBO"',
    ]:  # fmt: skip
        assert kept in clean
    # The remote image stays, but only loads once the user asks for it.
    assert '<img data-remote-src="https://img.test/a.png">' in clean


def test_remote_images_blocked_until_shown():
    html = (
        '<p><img alt="a > b" src="https://img.test/a.png?x=1&amp;y=2">'
        '<img src="HTTP://img.test/b.gif"><img src="cid:c@x"></p>'
    )
    blocked = sanitize_html(html)
    assert ' src="http' not in blocked.lower()
    assert 'data-remote-src="https://img.test/a.png?x=1&amp;y=2"' in blocked
    assert has_remote_images(blocked)
    shown = show_remote_images(blocked)
    assert shown == sanitize_html(html, allow_remote=True)
    assert 'src="https://img.test/a.png?x=1&amp;y=2"' in shown
    assert 'src="cid:c@x"' in shown
    assert not has_remote_images(sanitize_html('<img src="cid:c@x"><p>x</p>'))


def test_remote_image_urls_cannot_be_smuggled_in():
    # A sender cannot write data-remote-src itself, nor an attribute that
    # show_remote_images would turn into a remote src.
    html = '<img data-remote-src="https://evil.test/a.png" alt=\' src="https://x"\'>'
    clean = sanitize_html(html)
    assert "evil.test" not in clean
    assert 'src="https' not in show_remote_images(clean)


def test_cid_aliases_and_references():
    html = '<img src="logo.png"><img src="part1@x"><img src="other.png">'
    aliases = {"logo.png": "cid:logo@x", "part1@x": "cid:part1@x"}
    clean = sanitize_html(html, cid_aliases=aliases)
    assert clean == '<img src="cid:logo@x"><img src="cid:part1@x"><img>'
    assert referenced_content_ids(clean) == {"logo@x", "part1@x"}
    assert referenced_content_ids('<img src="cid:a%40b">') == {"a@b"}
    assert referenced_content_ids("<p>cid:text only</p>") == set()


def test_safe_links_and_anchors_kept():
    clean = sanitize_html(
        '<a href="mailto:a@example.test">m</a><a href="#top">t</a>'
        '<a href="tel:+491234">p</a><a href="/relative">r</a>'
    )
    assert 'href="mailto:a@example.test"' in clean
    assert 'href="#top"' in clean and 'href="tel:+491234"' in clean
    assert "/relative" not in clean


def test_overlaying_styles_removed():
    clean = sanitize_html('<div style="position:fixed;z-index:9;color:blue">x</div>')
    assert "position" not in clean and "z-index" not in clean
    assert "color:blue" in clean


def test_style_declarations_that_fetch_are_dropped_alone():
    clean = sanitize_html(
        '<p style="color:red;list-style:url(https://t.test/p.gif);font-weight:bold">'
        "x</p>"
    )
    assert clean == '<p style="color:red;font-weight:bold">x</p>'


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
