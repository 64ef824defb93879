"""Incremental, crash-safe synchronisation of one IMAP folder.

What one pass (``sync_folder``) does:

1. EXAMINE the folder: read-only, one round trip, returns UIDVALIDITY, UIDNEXT.
2. Idle check: when UIDVALIDITY and UIDNEXT both equal the stored cursor, nothing
   arrived and the pass ends without yielding. An idle poll therefore costs exactly
   one EXAMINE per folder.
3. UIDVALIDITY rules: UIDs only mean something under the UIDVALIDITY they were
   read with. When it changed (folder recreated, server migrated) the pass starts
   over from last_uid = 0 and re-reads the whole folder; the caller's dedupe keys
   (Message-ID, or a content hash) keep already-stored messages from being stored
   twice. A UIDNEXT at or below our last_uid under the same UIDVALIDITY breaks the
   IMAP rules too (a server restored from backup) and is treated the same way.
4. UID SEARCH the new range, bounded by the UIDNEXT that EXAMINE reported, so the
   pass works on a snapshot; mail arriving meanwhile is the next pass's.
5. For each batch of UIDs: one UID FETCH of the threading headers and sizes, then
   ``wanted(headers)`` (the caller's short database lookup) picks the UIDs worth a
   body, those bodies are fetched in batched, count- and size-bounded UID FETCH
   commands, parsed, and yielded one body group at a time as a SyncBatch.

Each body group is its own SyncBatch, so what a batch holds in memory (and what
the caller writes in one transaction) stays within BODY_CHUNK messages and
BODY_CHUNK_BYTES, whatever the header batch size. Fetching the next group on a
thread while this one is parsed was tried and measured slower on two busy
cores: parsing holds the GIL, and the fetch thread waits for it after every
socket read.

The cursor (FolderState) moves with the batches. Each SyncBatch.state is the
cursor after that batch and must be committed in the same transaction as the
batch's messages: a crash before the commit replays the batch, a crash after it
resumes behind it, so nothing is lost or duplicated. Folder states, as the
cursor shows them:

- new: uidvalidity None, last_uid 0; the first pass reads everything.
- catching up: uidnext None; set on every batch but a pass's last, so an
  interrupted pass is never mistaken for an idle folder.
- in step: uidnext set; the next pass is an idle poll unless mail arrived.
- gone: EXAMINE raised FolderGone; the caller stops syncing the folder.

Large messages (RFC822.SIZE above LARGE_MESSAGE_BYTES) take another road when
the caller gives a spool folder: each is fetched alone, written to a file in
that folder, and parsed from the file with ``parse_message_file``, which writes
its large attachments to further spool files as it reads. The raw bytes are
dropped before parsing starts (see ImapSession.fetch_body_into), the message
file is removed after it, and the attachments come back with
``ParsedAttachment.path`` set: the caller moves those files into storage or
removes them (``spooled_paths``). Small messages keep the batched in-memory
path.

Nothing here touches the database; it takes and yields plain data.
"""

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from posta.mail.imap import FolderStatus, HeaderInfo, ImapSession
from posta.mail.parse import ParsedMessage, parse_message, parse_message_file

logger = logging.getLogger(__name__)

BODY_CHUNK = 200
# Bound one body FETCH by size too: 200 messages with large attachments would
# otherwise all sit in memory at once.
BODY_CHUNK_BYTES = 32 * 1024 * 1024
# Messages above this size are fetched one by one into a spool file and parsed
# from it, when the caller gives a spool folder.
LARGE_MESSAGE_BYTES = 1024 * 1024


@dataclass
class FolderState:
    """The sync cursor of one folder, as persisted by the caller."""

    name: str
    uidvalidity: int | None
    last_uid: int
    uidnext: int | None


@dataclass
class SyncBatch:
    """New messages to store together with the cursor that follows them."""

    headers: list[HeaderInfo]
    messages: list[tuple[int, ParsedMessage]]
    state: FolderState


def sync_folder(
    session: ImapSession,
    state: FolderState,
    wanted: Callable[[list[HeaderInfo]], set[int]],
    batch_size: int = 500,
    spool_dir: str | None = None,
) -> Iterator[SyncBatch]:
    """Yield batches of new messages in `state.name` since `state`'s cursor.

    With `spool_dir`, large messages are parsed from files there and their large
    attachments left in files there (see the module notes); the caller owns them.
    """
    status = session.select(state.name)
    where = f"{session.account} folder {state.name}"
    if _is_idle(state, status):
        logger.debug("Sync %s: no new mail (uidnext %s)", where, status.uidnext)
        return
    last_uid = _start_uid(state, status, where)
    uids = _new_uids(session, last_uid, status)
    logger.info("Sync %s: %d new messages after uid %d", where, len(uids), last_uid)
    if not uids:
        yield SyncBatch([], [], _cursor(state.name, status, last_uid, final=True))
        return
    for start in range(0, len(uids), batch_size):
        chunk = uids[start : start + batch_size]
        final = start + batch_size >= len(uids)
        headers = session.fetch_headers(chunk)
        picked = set(wanted(headers)) & {header.uid for header in headers}
        for step in _steps(chunk, headers, picked, final):
            yield _read(session, state.name, status, step, where, spool_dir)


@dataclass
class _Step:
    """One body group of a header batch and the cursor that follows it."""

    headers: list[HeaderInfo]
    uids: list[int]
    last_uid: int
    final: bool


def _steps(
    chunk: list[int], headers: list[HeaderInfo], picked: set[int], final: bool
) -> Iterator[_Step]:
    """Split a header batch into body groups; the last one carries the chunk end."""
    groups = list(_body_groups([h for h in headers if h.uid in picked]))
    if not groups:
        yield _Step(headers, [], chunk[-1], final)
        return
    done = 0
    for number, group in enumerate(groups):
        last = number + 1 == len(groups)
        end = chunk[-1] if last else group[-1]
        covered = [h for h in headers[done:] if h.uid <= end]
        done += len(covered)
        yield _Step(covered, group, end, final and last)


def _read(
    session: ImapSession,
    name: str,
    status: FolderStatus,
    step: _Step,
    where: str,
    spool_dir: str | None,
) -> SyncBatch:
    """Fetch and parse one body group; return it with the cursor that follows it."""
    large = _large_uids(step, spool_dir)
    small = [uid for uid in step.uids if uid not in large] if large else step.uids
    raws = session.fetch_bodies(small, chunk=len(small)) if small else []
    messages = [(uid, parse_message(raw)) for uid, raw in raws]
    if large:
        try:
            for uid in sorted(large):
                parsed = _read_spooled(session, uid, spool_dir)
                if parsed is not None:
                    messages.append((uid, parsed))
        except BaseException:
            _discard(spooled_paths(parsed for _, parsed in messages))
            raise
        messages.sort(key=lambda item: item[0])
    logger.info(
        "Sync %s: batch up to uid %d, %d headers, %d bodies (%d spooled)",
        where,
        step.last_uid,
        len(step.headers),
        len(messages),
        len(large),
    )
    return SyncBatch(
        step.headers, messages, _cursor(name, status, step.last_uid, step.final)
    )


def _large_uids(step: _Step, spool_dir: str | None) -> set[int]:
    """Return the UIDs of the group to read through a spool file."""
    if spool_dir is None or not step.uids:
        return set()
    uids = set(step.uids)
    return {
        h.uid for h in step.headers if h.uid in uids and h.size > LARGE_MESSAGE_BYTES
    }


def _read_spooled(
    session: ImapSession, uid: int, spool_dir: str
) -> ParsedMessage | None:
    """Fetch one message into a spool file and parse it from there."""
    handle, path = tempfile.mkstemp(prefix="posta-", suffix=".eml", dir=spool_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            size = session.fetch_body_into(uid, out)
        if size is None:
            return None
        return parse_message_file(path, spool_dir)
    finally:
        _discard([path])


def spooled_paths(messages: Iterable[ParsedMessage]) -> list[str]:
    """Return the spool files that parsed messages' attachments are in."""
    return [
        part.path for parsed in messages for part in parsed.attachments if part.path
    ]


def _discard(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("could not remove %s", path, exc_info=True)


def _is_idle(state: FolderState, status: FolderStatus) -> bool:
    return (
        state.uidvalidity == status.uidvalidity
        and status.uidnext is not None
        and state.uidnext == status.uidnext
        and status.uidnext > state.last_uid
    )


def _start_uid(state: FolderState, status: FolderStatus, where: str) -> int:
    """Return the UID after which to read, applying the UIDVALIDITY rules."""
    if state.uidvalidity is None:
        return state.last_uid
    if state.uidvalidity != status.uidvalidity:
        logger.warning(
            "Sync %s: UIDVALIDITY changed %s -> %s, re-reading the folder",
            where,
            state.uidvalidity,
            status.uidvalidity,
        )
        return 0
    if status.uidnext is not None and status.uidnext <= state.last_uid:
        logger.warning(
            "Sync %s: UIDNEXT %s went back below last uid %s, re-reading the folder",
            where,
            status.uidnext,
            state.last_uid,
        )
        return 0
    return state.last_uid


def _new_uids(session: ImapSession, last_uid: int, status: FolderStatus) -> list[int]:
    """Return the UIDs above last_uid that existed when EXAMINE answered."""
    if status.uidnext is None:
        return session.search_uids(f"{last_uid + 1}:*")
    if status.uidnext <= last_uid + 1 or status.exists == 0:
        return []
    return session.search_uids(f"{last_uid + 1}:{status.uidnext - 1}")


def _cursor(name: str, status: FolderStatus, last_uid: int, final: bool) -> FolderState:
    return FolderState(
        name=name,
        uidvalidity=status.uidvalidity,
        last_uid=last_uid,
        uidnext=status.uidnext if final else None,
    )


def _body_groups(headers: list[HeaderInfo]) -> Iterator[list[int]]:
    group: list[int] = []
    size = 0
    for header in headers:
        too_big = size + header.size > BODY_CHUNK_BYTES
        if group and (len(group) >= BODY_CHUNK or too_big):
            yield group
            group, size = [], 0
        group.append(header.uid)
        size += header.size
    if group:
        yield group
