"""Make untrusted email HTML safe to show, and turn HTML into plain text."""

import logging
import re
from html.parser import HTMLParser

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

# fmt: off
_BLOCK_TAGS = {
    "address", "article", "blockquote", "center", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "ol", "p", "pre", "section", "table", "tr", "ul",
}
# fmt: on
_PARAGRAPH_TAGS = {"p", "blockquote", "ul", "ol", "table", "pre", "h1", "h2", "h3"}
_SKIP_TEXT_TAGS = {"script", "style", "head", "title", "template", "noscript"}


def sanitize_html(html: str) -> str:
    """Return `html` with scripts, active content and dangerous URLs removed."""
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=_URL_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
    )


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Drop data: URLs except raster images in <img src>."""
    if attribute not in _URL_ATTRIBUTES:
        return value
    if value.strip().lower().startswith("data:"):
        if tag == "img" and attribute == "src" and _SAFE_DATA_IMAGE.match(value):
            return value
        return None
    return value


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
