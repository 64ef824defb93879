"""Make untrusted email HTML safe to show, and turn HTML into plain text."""

import logging
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import unquote

import nh3

logger = logging.getLogger(__name__)

# fmt: off
_TAGS = {
    "a", "abbr", "address", "b", "big", "blockquote", "br", "caption", "center",
    "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em",
    "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small",
    "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul", "var", "wbr",
}
# Removed together with everything inside them, not just unwrapped.
_CLEAN_CONTENT_TAGS = {
    "script", "style", "iframe", "object", "embed", "applet", "noscript", "template",
    "head", "title", "meta", "link", "svg", "math", "select", "textarea", "button",
}
_ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align", "valign", "width", "height",
          "bgcolor"},
    "a": {"href", "name"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value"},
    "blockquote": {"cite"},
    "q": {"cite"},
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_URL_ATTRIBUTES = {"href", "src", "cite"}
# Presentation only: nothing that can position over the app's own UI
# (position, z-index) or fetch a resource (background-image, url()).
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "line-height", "letter-spacing", "word-spacing",
    "text-align", "text-decoration", "text-indent", "text-transform", "white-space",
    "vertical-align", "direction", "margin", "margin-top", "margin-right",
    "margin-bottom", "margin-left", "padding", "padding-top", "padding-right",
    "padding-bottom", "padding-left", "border", "border-top", "border-right",
    "border-bottom", "border-left", "border-color", "border-style", "border-width",
    "border-collapse", "border-spacing", "border-radius", "width", "height",
    "max-width", "min-width", "max-height", "min-height", "display", "list-style",
    "list-style-type", "table-layout", "float", "clear",
}
# fmt: on
_SAFE_DATA_IMAGE = re.compile(r"^data:image/(png|jpe?g|gif|webp|bmp);", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# A declaration with any of these can fetch a resource or run code in some
# browser (url(), image-set(), IE's expression()/behavior, CSS escapes hiding
# them), so it goes even when its property is otherwise allowed.
_UNSAFE_CSS = ("url", "image", "expression", "behavior", "binding", "\\", "/*", "@")
# The serializer quotes every attribute value with '"' and escapes '"' inside
# values, so a tag is '<img' followed by name="value" pairs.
_IMG_TAG = re.compile(r'<img\b(?:[^>"]|"[^"]*")*>')
_REMOTE_SRC = re.compile(r'(\s)src="(https?:[^"]*)"', re.IGNORECASE)
_BLOCKED_SRC = re.compile(r'(\s)data-remote-src="([^"]*)"')
_CID_SRC = re.compile(r'\ssrc="cid:([^"]*)"', re.IGNORECASE)

# fmt: off
_BLOCK_TAGS = {
    "address", "article", "blockquote", "center", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "ol", "p", "pre", "section", "table", "tr", "ul",
}
# fmt: on
_PARAGRAPH_TAGS = {"p", "blockquote", "ul", "ol", "table", "pre", "h1", "h2", "h3"}
_SKIP_TEXT_TAGS = {"script", "style", "head", "title", "template", "noscript"}


def sanitize_html(
    html: str,
    allow_remote: bool = False,
    cid_aliases: Mapping[str, str] | None = None,
) -> str:
    """Return `html` with scripts, active content and dangerous URLs removed.

    Remote images stay in the markup but, unless `allow_remote`, their URL moves
    to data-remote-src so nothing loads until the user asks. `cid_aliases` maps
    image sources that name an inline part without "cid:" (a bare Content-ID,
    a Content-Location or a file name) to the "cid:<id>" that replaces them.
    """
    aliases = cid_aliases or {}
    clean = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=lambda tag, name, value: _filter_attribute(
            tag, name, value, aliases
        ),
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=_URL_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
    )
    return clean if allow_remote else block_remote_images(clean)


def block_remote_images(html: str) -> str:
    """Move http(s) image sources of sanitized HTML to data-remote-src."""
    if "<img" not in html:
        return html
    return _IMG_TAG.sub(
        lambda tag: _REMOTE_SRC.sub(r'\1data-remote-src="\2"', tag.group(0)), html
    )


def show_remote_images(html: str) -> str:
    """Undo block_remote_images: remote images in sanitized HTML load again."""
    return _IMG_TAG.sub(lambda tag: _BLOCKED_SRC.sub(r'\1src="\2"', tag.group(0)), html)


def has_remote_images(html: str | None) -> bool:
    """Tell whether sanitized HTML has images that load from the network."""
    if not html or "<img" not in html:
        return False
    return any(
        _REMOTE_SRC.search(tag) or _BLOCKED_SRC.search(tag)
        for tag in _IMG_TAG.findall(html)
    )


def referenced_content_ids(html: str | None) -> set[str]:
    """Return the Content-IDs that sanitized HTML shows as "cid:" images."""
    if not html or "cid:" not in html.lower():
        return set()
    return {unquote(cid) for cid in _CID_SRC.findall(html)}


def _filter_attribute(
    tag: str, attribute: str, value: str, aliases: Mapping[str, str]
) -> str | None:
    """Drop unsafe URLs and styles; point bare inline-image names at their cid."""
    if attribute == "style":
        return _filter_style(value)
    if attribute not in _URL_ATTRIBUTES:
        return value
    url = value.strip()
    if tag == "img" and attribute == "src" and not _HAS_SCHEME.match(url):
        return aliases.get(url) or aliases.get(unquote(url))
    if url.lower().startswith("data:"):
        if tag == "img" and attribute == "src" and _SAFE_DATA_IMAGE.match(url):
            return url
        return None
    # A relative URL would resolve against Posta itself; only in-page anchors
    # are harmless.
    if not _HAS_SCHEME.match(url) and not url.startswith("#"):
        return None
    return value


def _filter_style(value: str) -> str | None:
    """Keep the style declarations that cannot load anything."""
    kept = [
        declaration.strip()
        for declaration in value.split(";")
        if declaration.strip()
        and not any(token in declaration.lower() for token in _UNSAFE_CSS)
    ]
    return ";".join(kept) or None


def html_to_text(html: str) -> str:
    """Render HTML as readable plain text (paragraphs, line breaks, list items)."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except AssertionError:
        # html.parser gives up on some broken markup; keep what it read so far.
        logger.debug("HTML to text stopped early on malformed markup")
    return parser.text()


class _TextExtractor(HTMLParser):
    """Collect text, turning block elements into line breaks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TEXT_TAGS:
            self._skip_depth += 1
        elif tag == "br":
            self._parts.append("\n")
        elif tag == "li":
            self._parts.append("\n- ")
        elif tag in ("td", "th"):
            self._parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n\n" if tag in _PARAGRAPH_TAGS else "\n")
        if tag == "pre":
            self._pre_depth += 1

    def handle_endtag(self, tag):
        if tag in _SKIP_TEXT_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n\n" if tag in _PARAGRAPH_TAGS else "\n")
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data):
        if self._skip_depth:
            return
        if not self._pre_depth:
            data = re.sub(r"\s+", " ", data)
        self._parts.append(data)

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self._parts).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
