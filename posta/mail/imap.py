"""IMAP adapter: a thin, batched, read-only layer over IMAPClient.

Every FETCH is batched (one command for many UIDs): on a link with 20 ms of
round trip, one FETCH per message is ~40x slower than chunks of a few hundred.
Nothing here marks mail as read: folders are opened with EXAMINE and bodies are
read with BODY.PEEK.
"""

import contextlib
import email.utils
import imaplib
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import BinaryIO

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from posta.mail.errors import (
    FolderGone,
    MailError,
    TLSFailure,
    TransientError,
    auth_error_from_text,
    classify_network_error,
)
from posta.mail.headers import decode_header_text, parse_date, raw_header
from posta.mail.threads import normalize_message_id, parse_id_list

logger = logging.getLogger(__name__)

# CONTENT-TYPE tells delivery reports (multipart/report), which seldom carry
# In-Reply-To, so the caller can read the id of the message they return.
HEADER_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT FROM DATE CONTENT-TYPE"
HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})]"
HEADER_CHUNK = 1000
# imaplib's debug level under IMAPClient (see _connect).
IMAPLIB_DEBUG = 4
# How often a wait in IDLE checks whether it should stop.
IDLE_SLICE = 1.0
# Keep command lines under the 8 KB many servers accept (RFC 7162 §4 advice).
MAX_UID_SET_CHARS = 7000
_MISSING_FOLDER_MARKERS = (
    "nonexistent",
    "doesn't exist",
    "does not exist",
    "not found",
    "no such",
    "unknown mailbox",
)
_TEMPORARY_LOGIN_MARKERS = ("[unavailable]", "[serverbug]", "[inuse]")


@dataclass
class ImapSettings:
    """Where and how to log in to an IMAP server."""

    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str
    password: str = field(repr=False)
    ca_bundle: str | None = None
    timeout: float = 20.0


@dataclass
class FolderStatus:
    """What EXAMINE says about a folder."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None


@dataclass
class HeaderInfo:
    """The threading headers and size of one message, fetched without its body."""

    uid: int
    size: int
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    from_addr: str | None
    date: datetime | None = None
    content_type: str = ""


def check_login(settings: ImapSettings) -> None:
    """Connect, log in, ask CAPABILITY and log out, raising the error family."""
    with ImapSession(settings) as session:
        session.capabilities()


class ImapSession:
    """A logged-in IMAP connection; use as a context manager."""

    def __init__(self, settings: ImapSettings):
        self.settings = settings
        self.account = f"{settings.username} on {settings.host}"
        self._client: IMAPClient | None = None

    def __enter__(self) -> "ImapSession":
        self._client = _connect(self.settings)
        try:
            _login(self._client, self.settings)
        except BaseException:
            _close_quietly(self._client)
            raise
        logger.info("IMAP session opened for %s", self.account)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._client is not None:
            _close_quietly(self._client)
            self._client = None
        logger.info("IMAP session closed for %s", self.account)

    def capabilities(self) -> tuple[bytes, ...]:
        """Ask the server for its capabilities afresh (they change after login)."""
        with self._errors("CAPABILITY"):
            return tuple(self._client.capabilities())

    def select(self, folder: str) -> FolderStatus:
        """Open a folder read-only with one EXAMINE and return its status."""
        with self._errors("EXAMINE", folder):
            try:
                response = self._client.select_folder(folder, readonly=True)
            except imaplib.IMAP4.error as exc:
                if _is_missing_folder(str(exc)):
                    raise FolderGone(f"Folder {folder!r} does not exist.") from exc
                raise
        status = FolderStatus(
            name=folder,
            uidvalidity=response[b"UIDVALIDITY"],
            uidnext=response.get(b"UIDNEXT"),
            exists=response.get(b"EXISTS", 0),
            highestmodseq=response.get(b"HIGHESTMODSEQ"),
        )
        logger.debug("EXAMINE %s on %s: %s", folder, self.account, status)
        return status

    def search_uids(self, uid_range: str) -> list[int]:
        """Return the UIDs in a range such as "42:*", sorted."""
        low = _range_floor(uid_range)
        with self._errors("UID SEARCH"):
            uids = self._client.search(["UID", uid_range])
        # "n:*" always matches the last message, even when its UID is below n.
        return sorted(uid for uid in uids if uid >= low)

    def search_header(self, name: str, value: str) -> list[int]:
        """Return the UIDs whose header `name` contains `value`."""
        with self._errors("UID SEARCH HEADER"):
            return sorted(self._client.search(["HEADER", name, value]))

    def fetch_headers(self, uids_or_range: Sequence[int] | str) -> list[HeaderInfo]:
        """Fetch threading headers and sizes, in few batched UID FETCH commands."""
        if isinstance(uids_or_range, str):
            uids = self.search_uids(uids_or_range)
        else:
            uids = sorted(set(uids_or_range))
        headers: list[HeaderInfo] = []
        for chunk in _uid_chunks(uids, HEADER_CHUNK):
            with self._errors("UID FETCH headers"):
                response = self._client.fetch(chunk, [HEADER_ITEM, "RFC822.SIZE"])
            headers.extend(_header_info(uid, response[uid]) for uid in sorted(response))
        logger.debug("Fetched %d headers on %s", len(headers), self.account)
        return headers

    def fetch_bodies(
        self, uids: Sequence[int], chunk: int = 200
    ) -> Iterator[tuple[int, bytes]]:
        """Yield (uid, raw message) in UID order, fetching `chunk` per command."""
        for batch in _uid_chunks(sorted(set(uids)), chunk):
            with self._errors("UID FETCH bodies"):
                response = self._client.fetch(batch, ["BODY.PEEK[]"])
            for uid in batch:
                raw = response.get(uid, {}).get(b"BODY[]")
                if raw is None:
                    # Expunged between the header and the body fetch.
                    logger.debug("UID %d vanished on %s", uid, self.account)
                    continue
                yield uid, raw

    def fetch_body_into(self, uid: int, out: BinaryIO) -> int | None:
        """Fetch one message and write it to `out`; return its size, None if gone.

        For large messages, which the caller then parses from the file.
        IMAPClient (through imaplib) reads a literal into one bytes object
        before it returns, so the raw message is held in memory once, here and
        only here: the response is unpacked by reference (no copies, lists or
        joins) and dropped as soon as it is written, before any parsing starts.
        """
        with self._errors("UID FETCH body"):
            response = self._client.fetch([uid], ["BODY.PEEK[]"])
        raw = response.pop(uid, {}).pop(b"BODY[]", None)
        del response
        if raw is None:
            logger.debug("UID %d vanished on %s", uid, self.account)
            return None
        out.write(raw)
        return len(raw)

    def supports_idle(self) -> bool:
        """Return whether the server offers IDLE (asking CAPABILITY afresh)."""
        return b"IDLE" in self.capabilities()

    def idle(self, seconds: float, stop: Callable[[], bool]) -> bool:
        """Wait in IDLE on the selected folder; return True when new mail arrived.

        Returns after `seconds`, as soon as the server reports EXISTS, or within
        IDLE_SLICE seconds of `stop()` turning true. Nothing is sent while it
        waits, so the wait costs no round trips beyond IDLE and DONE.
        """
        deadline = time.monotonic() + seconds
        arrived = False
        with self._errors("IDLE"):
            self._client.idle()
            try:
                while not arrived and not stop():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(IDLE_SLICE, left)
                    started = time.monotonic()
                    responses = self._client.idle_check(timeout=wait)
                    arrived = _has_new_mail(responses)
                    # Readable yet nothing to read: the server hung up. DONE
                    # below then fails and the caller reconnects.
                    if not responses and time.monotonic() - started < wait / 2:
                        break
            finally:
                _, late = self._client.idle_done()
        return arrived or _has_new_mail(late)

    @contextlib.contextmanager
    def _errors(self, command: str, folder: str | None = None) -> Iterator[None]:
        """Translate IMAPClient and socket exceptions into the error family."""
        if self._client is None:
            raise RuntimeError("ImapSession used outside its with-block")
        try:
            yield
        except MailError:
            raise
        except (OSError, EOFError, imaplib.IMAP4.error) as exc:
            if isinstance(exc, imaplib.IMAP4.error) and not isinstance(
                exc, imaplib.IMAP4.abort
            ):
                error: MailError = TransientError(f"{command} failed: {exc}")
            else:
                error = classify_network_error(exc)
            logger.debug(
                "%s failed on %s folder %s: %s", command, self.account, folder, error
            )
            raise error from exc


def _ssl_context(settings: ImapSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_bundle)


def _connect(settings: ImapSettings) -> IMAPClient:
    """Open the TCP/TLS connection, upgrading with STARTTLS when asked."""
    implicit_tls = settings.security == "ssl"
    try:
        client = IMAPClient(
            settings.host,
            port=settings.port,
            ssl=implicit_tls,
            ssl_context=_ssl_context(settings) if implicit_tls else None,
            timeout=settings.timeout,
        )
    except (OSError, EOFError, imaplib.IMAP4.error) as exc:
        raise _connect_error(exc) from exc
    # IMAPClient runs imaplib at debug level 5 to route its log lines into
    # logging. At 5, imaplib also formats the repr of every literal it reads
    # (twice), whether or not anything is logged: several transient copies of
    # each message body, and CPU spent on them. Level 4 keeps the command and
    # response lines in the log (the tests read them) and drops those dumps.
    client._imap.debug = IMAPLIB_DEBUG
    if settings.security == "starttls":
        _starttls(client, settings)
    return client


def _starttls(client: IMAPClient, settings: ImapSettings) -> None:
    try:
        client.starttls(_ssl_context(settings))
    except CapabilityError as exc:
        _close_quietly(client)
        raise TLSFailure("The server does not offer STARTTLS.") from exc
    except (OSError, EOFError, imaplib.IMAP4.error) as exc:
        _close_quietly(client)
        raise _connect_error(exc) from exc


def _connect_error(exc: BaseException) -> MailError:
    """Classify a failure while connecting or before the greeting."""
    if isinstance(exc, imaplib.IMAP4.error) and not isinstance(
        exc, imaplib.IMAP4.abort
    ):
        return TransientError(f"The IMAP server refused the connection: {exc}")
    return classify_network_error(exc)


def _login(client: IMAPClient, settings: ImapSettings) -> None:
    try:
        client.login(settings.username, settings.password)
    except LoginError as exc:
        text = str(exc)
        if any(marker in text.lower() for marker in _TEMPORARY_LOGIN_MARKERS):
            raise TransientError(f"The server cannot log in right now: {text}") from exc
        raise auth_error_from_text(text, settings.host) from exc
    except (OSError, EOFError, imaplib.IMAP4.error) as exc:
        raise classify_network_error(exc) from exc


def _close_quietly(client: IMAPClient) -> None:
    """Log out, or drop the socket if the server is already gone."""
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


def _is_missing_folder(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _MISSING_FOLDER_MARKERS)


def _range_floor(uid_range: str) -> int:
    """Return the lowest UID a range like "42:*" or "7:9" can match."""
    first = uid_range.split(",")[0].split(":")[0]
    return 1 if first == "*" else int(first)


def _has_new_mail(responses) -> bool:
    """Return whether IDLE responses such as (3, b"EXISTS") announce new mail."""
    return any(len(r) >= 2 and r[1] == b"EXISTS" for r in responses or ())


def _uid_chunks(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    """Split UIDs into chunks of at most `size` and about MAX_UID_SET_CHARS."""
    chunk: list[int] = []
    chars = 0
    for uid in uids:
        width = len(str(uid)) + 1
        if chunk and (len(chunk) >= size or chars + width > MAX_UID_SET_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(uid)
        chars += width
    if chunk:
        yield chunk


def _header_info(uid: int, item: dict) -> HeaderInfo:
    """Build a HeaderInfo from one FETCH response item."""
    raw = next((v for k, v in item.items() if k.startswith(b"BODY[HEADER")), b"")
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw or b"")
    from_values = email.utils.getaddresses([raw_header(headers, "From") or ""])
    from_addr = next((addr.lower() for _, addr in from_values if addr), None)
    return HeaderInfo(
        uid=uid,
        size=item.get(b"RFC822.SIZE", 0),
        message_id=normalize_message_id(raw_header(headers, "Message-ID")),
        in_reply_to=normalize_message_id(raw_header(headers, "In-Reply-To")),
        references=parse_id_list(raw_header(headers, "References")),
        subject=decode_header_text(raw_header(headers, "Subject")) or "",
        from_addr=from_addr,
        date=parse_date(raw_header(headers, "Date")),
        content_type=(raw_header(headers, "Content-Type") or "").strip(),
    )
