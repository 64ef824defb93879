"""Message-ID, subject and task-tag handling for linking replies to their task."""

import re

_ID_TOKEN = re.compile(r"<([^<>]+)>")
# An id without its angle brackets (or with one of them missing), as some
# mailers write it: the first "local@domain" token.
_BARE_ID = re.compile(r"[^\s<>()\"',;]+@[^\s<>()\"',;]+")
# Reply and forward prefixes across mail clients and languages, optionally
# numbered ("Re[2]:", "Re(2):", "Re^2:"), with ASCII or full-width colon.
_REPLY_WORDS = (
    "re", "aw", "sv", "vs", "rif", "r", "fwd", "fw", "wg", "tr", "réf", "ref",
    "rv", "antw", "antwort", "doorst", "odp", "enc", "res", "fs", "vl", "ynt",
    "回复", "回覆", "转发", "轉寄", "답장", "전달",
)  # fmt: skip
_PREFIX = re.compile(
    r"^\s*(?:(?:"
    + "|".join(sorted(map(re.escape, _REPLY_WORDS), key=len, reverse=True))
    + r")\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]|\[[^\[\]]*\])\s*",
    re.IGNORECASE,
)
_TASK_TAG = re.compile(r"\[T-(\d{1,12})\]", re.IGNORECASE)


def normalize_message_id(value: str | None) -> str | None:
    """Return the first Message-ID in `value` as "<local@domain>", or None."""
    ids = parse_id_list(value)
    if ids:
        return ids[0]
    if not value:
        return None
    bare = _BARE_ID.search(value)
    return f"<{bare.group(0)}>" if bare else None


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


def strip_subject_prefixes(subject: str | None) -> str:
    """Return the subject without stacked reply/forward prefixes and [list] tags."""
    text = " ".join((subject or "").split())
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            return text
        text = stripped


def task_tag(task_id: int) -> str:
    """Return the subject tag that marks mail about a task, e.g. "[T-42]"."""
    return f"[T-{int(task_id)}]"


def find_task_tag(subject: str | None) -> int | None:
    """Return the task id of the first task tag in a subject, or None."""
    match = _TASK_TAG.search(subject or "")
    return int(match.group(1)) if match else None


def add_task_tag(subject: str | None, task_id: int) -> str:
    """Return the subject tagged for `task_id`; a tag of another task is replaced."""
    subject = subject or ""
    tag = task_tag(task_id)
    if find_task_tag(subject) == int(task_id):
        return subject
    if _TASK_TAG.search(subject):
        return _TASK_TAG.sub(tag, subject, count=1)
    return f"{tag} {subject}".rstrip()
