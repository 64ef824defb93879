"""Message-ID handling for linking replies to the task they answer."""

import re

_ID_TOKEN = re.compile(r"<([^<>]+)>")


def normalize_message_id(value: str | None) -> str | None:
    """Return the first Message-ID in `value` as "<local@domain>", or None."""
    ids = parse_id_list(value)
    if ids:
        return ids[0]
    if not value:
        return None
    # Some mailers drop the angle brackets; accept a lone "local@domain" token.
    bare = value.strip()
    if "@" in bare and not any(ch.isspace() or ch in "<>" for ch in bare):
        return f"<{bare}>"
    return None


def parse_id_list(value: str | None) -> list[str]:
    """Return every "<...>" Message-ID in a header value, in order, deduplicated."""
    if not value:
        return []
    seen: dict[str, None] = {}
    for match in _ID_TOKEN.finditer(value):
        # Folding can leave whitespace inside an id; no valid id contains any.
        token = "".join(match.group(1).split())
        if token:
            seen.setdefault(f"<{token}>", None)
    return list(seen)


def reference_ids(
    in_reply_to: str | None, references: list[str] | str | None
) -> list[str]:
    """Return the ids a reply points at, most recent first, normalized and deduped."""
    if isinstance(references, str):
        references = parse_id_list(references)
    # References lists the oldest ancestor first and the parent last.
    candidates = parse_id_list(in_reply_to) or [normalize_message_id(in_reply_to)]
    candidates += [normalize_message_id(ref) for ref in reversed(references or [])]
    ordered: dict[str, None] = {}
    for message_id in candidates:
        if message_id:
            ordered.setdefault(message_id, None)
    return list(ordered)
