"""Mail through Microsoft Graph for accounts signed in with Microsoft.

Design notes:

* Delta sync. ``delta_inbox`` yields one page at a time. The caller stores each
  page's messages, then the page's ``next_link`` (so a sync cut short by
  throttling or a crash resumes where it stopped), and stores ``delta_link`` only
  after the last page is persisted: a delta link saved early would skip the
  pages not yet stored. A 410 (sync state lost) raises ResyncNeeded; the caller
  starts over with no link, and deduplicating on internetMessageId keeps the
  replayed messages from turning into duplicates.
* Tokens. ``GraphClient`` wraps requests-oauthlib's OAuth2Session. It renews the
  access token shortly before it expires and once after a 401; Microsoft rotates
  the refresh token on every renewal, so the new token goes to ``token_updater``
  at once and the caller must persist it (encrypted). A refused renewal
  (invalid_grant, interaction_required, ...) raises AuthError: reconnect.
* Throttling. 429 and 503 are retried after Retry-After, a bounded number of
  times and never longer than a cap per wait; past that, Throttled (a
  TransientError carrying retry_after) lets the job queue reschedule. Outlook
  serves at most 4 concurrent requests per mailbox, so every request holds a
  slot of a per-mailbox semaphore shared by all clients of this process.
* Sending. Graph only lets clients set x- headers, so In-Reply-To/References
  cannot be set directly: a reply is drafted with createReply on the Graph id of
  the message answered, and Exchange threads it. Attachments under 3 MB travel
  inline; bigger ones go draft -> upload session (ranged PUTs) -> send.

Nothing here logs a token: URLs are logged without their query string, where
upload URLs carry theirs.
"""

import base64
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session
from urllib3.exceptions import NewConnectionError

from posta.mail.compose import OutgoingAttachment, OutgoingMail
from posta.mail.errors import (
    AmbiguousSendError,
    AuthError,
    MailError,
    PermanentSendError,
    ResyncNeeded,
    TimeoutFailure,
    TLSFailure,
    TransientError,
    classify_network_error,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_IN_FLIGHT_PER_MAILBOX = 4
# Graph takes requests up to 4 MB; base64 adds a third, so inline stays under 3 MB.
INLINE_LIMIT = 3_000_000
UPLOAD_CHUNK = 3 * 1024 * 1024
CONTACTS_PAGE = 50
# Ids that survive moves between folders (a sent draft moves to Sent Items).
PREFER_IMMUTABLE = 'IdType="ImmutableId"'
MESSAGE_FIELDS = (
    "id",
    "internetMessageId",
    "conversationId",
    "subject",
    "from",
    "toRecipients",
    "ccRecipients",
    "receivedDateTime",
    "hasAttachments",
    "body",
    "internetMessageHeaders",
)
# Refusals that no retry will cure: the user has to sign in again.
_RECONNECT_ERRORS = {
    "invalid_grant",
    "interaction_required",
    "consent_required",
    "login_required",
    "invalid_client",
    "unauthorized_client",
}


class Throttled(TransientError):
    """Microsoft asked us to wait longer than we wait inline."""

    kind = "throttled"
    default_detail = "Microsoft is throttling this mailbox; try again later."

    def __init__(self, detail: str | None = None, retry_after: float = 0.0):
        super().__init__(detail)
        self.retry_after = retry_after


class GraphError(MailError):
    """Graph refused the request for a reason a retry will not fix."""

    kind = "graph"
    default_detail = "Microsoft Graph refused the request."

    def __init__(self, detail: str | None = None, status: int = 0, code: str = ""):
        super().__init__(detail)
        self.status = status
        self.code = code


class MessageGone(GraphError):
    """The message (or draft) no longer exists in the mailbox."""

    kind = "message_gone"
    default_detail = "The message no longer exists in the mailbox."


@dataclass(frozen=True)
class GraphSettings:
    """Endpoints, app registration and retry policy for Graph."""

    graph_url: str
    token_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]
    timeout: float = 30.0
    max_attempts: int = 5
    max_retry_after: float = 30.0
    refresh_margin: float = 300.0


@dataclass(frozen=True)
class Recipient:
    """A display name and an address."""

    name: str
    address: str


@dataclass(frozen=True)
class GraphUser:
    """The signed-in account."""

    id: str
    address: str
    display_name: str
    personal: bool


@dataclass
class GraphMessage:
    """The fields of a message Posta keeps."""

    id: str
    internet_message_id: str | None
    conversation_id: str | None
    subject: str
    sender: Recipient | None
    to: list[Recipient]
    cc: list[Recipient]
    received_at: datetime | None
    has_attachments: bool
    body_type: str
    body: str
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)


@dataclass
class DeltaPage:
    """One page of a delta round; exactly one of the links is set."""

    messages: list[GraphMessage]
    removed_ids: list[str]
    next_link: str | None
    delta_link: str | None


@dataclass(frozen=True)
class GraphAttachment:
    """A file attached to a received message."""

    id: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    content: bytes


@dataclass(frozen=True)
class SentMail:
    """What Posta links its record to once Graph accepted the message."""

    internet_message_id: str
    message_id: str | None
    conversation_id: str | None


@dataclass(frozen=True)
class GraphContact:
    """One address from the user's contacts."""

    name: str
    address: str


class _NoUploadToken(logging.Filter):
    """Drop urllib3's request lines for upload URLs, whose query is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "authtoken=" not in record.getMessage()


# Their DEBUG lines print tokens and the client secret.
for _name in ("requests_oauthlib", "oauthlib"):
    if logging.getLogger(_name).level < logging.INFO:
        logging.getLogger(_name).setLevel(logging.INFO)
logging.getLogger("urllib3.connectionpool").addFilter(_NoUploadToken())

_slots_lock = threading.Lock()
_mailbox_slots: dict[str, threading.BoundedSemaphore] = {}


def _mailbox_slot(mailbox: str) -> threading.BoundedSemaphore:
    with _slots_lock:
        slot = _mailbox_slots.get(mailbox)
        if slot is None:
            slot = threading.BoundedSemaphore(MAX_IN_FLIGHT_PER_MAILBOX)
            _mailbox_slots[mailbox] = slot
        return slot


class GraphClient:
    """An authorised Graph session for one mailbox with retries and renewal."""

    def __init__(
        self,
        settings: GraphSettings,
        token: dict,
        token_updater: Callable[[dict], None],
        *,
        mailbox: str,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.mailbox = mailbox
        self._token_updater = token_updater
        self._sleep = sleep
        self._slot = _mailbox_slot(mailbox)
        self._refresh_lock = threading.Lock()
        # No scope on the session: Microsoft never echoes offline_access back,
        # which oauthlib would otherwise treat as a changed scope and raise.
        self._session = OAuth2Session(
            settings.client_id,
            token=token,
            auto_refresh_url=settings.token_url,
            auto_refresh_kwargs={
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
            },
            token_updater=self._store_token,
        )
        self._plain = requests.Session()

    @property
    def token(self) -> dict:
        """Return the current token dict (what the caller persists)."""
        return dict(self._session.token)

    def get_json(self, url: str, **kwargs) -> dict:
        """GET a Graph URL or path and return the decoded JSON body."""
        return self.request("GET", url, **kwargs).json()

    def request(
        self,
        method: str,
        url: str,
        *,
        authenticated: bool = True,
        sending: bool = False,
        **kwargs,
    ) -> requests.Response:
        """Send a request with renewal, throttling retries and error mapping."""
        url = self._absolute(url)
        headers = kwargs.pop("headers", {})
        renewed, attempt = False, 0
        while True:
            if authenticated:
                self._refresh_if_expiring()
            used = self._session.access_token
            response = self._send(method, url, headers, kwargs, authenticated, sending)
            if response.status_code == 401 and authenticated and not renewed:
                renewed = True
                self._refresh(stale=used)
                continue
            if response.status_code not in (429, 503):
                return _checked(response, method, url)
            attempt += 1
            self._wait(response, method, url, attempt)

    def _absolute(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        return self.settings.graph_url.rstrip("/") + "/" + url.lstrip("/")

    def _send(self, method, url, headers, kwargs, authenticated, sending):
        headers = dict(headers)
        if authenticated:
            headers["Prefer"] = ", ".join(
                filter(None, [headers.get("Prefer"), PREFER_IMMUTABLE])
            )
        session = self._session if authenticated else self._plain
        with self._slot:
            try:
                return session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self.settings.timeout,
                    **kwargs,
                )
            except OAuth2Error as exc:
                # requests-oauthlib renewed an expired token itself and failed.
                raise _auth_error(exc) from exc
            except requests.RequestException as exc:
                raise _network_error(exc, sending) from exc

    def _wait(self, response, method: str, url: str, attempt: int) -> None:
        delay = _retry_after(response, attempt)
        code = _error_code(response)
        if delay > self.settings.max_retry_after or attempt >= (
            self.settings.max_attempts
        ):
            raise Throttled(
                f"Microsoft answered {response.status_code} {code}; "
                f"retry after {delay:g} s.",
                retry_after=delay,
            )
        logger.warning(
            "Graph %s %s answered %s %s; retrying in %.2f s (attempt %d of %d)",
            method,
            _redact(url),
            response.status_code,
            code,
            delay,
            attempt,
            self.settings.max_attempts,
        )
        self._sleep(delay)

    def _refresh_if_expiring(self) -> None:
        expires_at = self._session.token.get("expires_at")
        if expires_at and expires_at - time.time() < self.settings.refresh_margin:
            self._refresh(stale=self._session.access_token)

    def _refresh(self, stale: str) -> None:
        """Renew the tokens unless another thread already replaced ``stale``."""
        with self._refresh_lock:
            if self._session.access_token != stale:
                return
            if not self._session.token.get("refresh_token"):
                raise AuthError(
                    "Microsoft did not grant offline access (no refresh token); "
                    "reconnect the account."
                )
            try:
                token = self._session.refresh_token(
                    self.settings.token_url,
                    body=urlencode({"scope": " ".join(self.settings.scopes)}),
                    timeout=self.settings.timeout,
                )
            except OAuth2Error as exc:
                raise _auth_error(exc) from exc
            except requests.RequestException as exc:
                raise _network_error(exc, sending=False) from exc
            self._store_token(token)

    def _store_token(self, token: dict) -> None:
        logger.info("Renewed the Microsoft access token for %s", self.mailbox)
        self._token_updater(dict(token))


def me(client: GraphClient) -> GraphUser:
    """Return the signed-in account."""
    data = client.get_json("me?$select=id,displayName,mail,userPrincipalName")
    address = data.get("mail") or data.get("userPrincipalName") or ""
    return GraphUser(
        id=data["id"],
        address=address,
        display_name=data.get("displayName") or address,
        personal=_is_personal_id(data["id"]),
    )


def delta_inbox(
    client: GraphClient, delta_link: str | None = None, page_size: int = 50
) -> Iterator[DeltaPage]:
    """Yield the Inbox changes since ``delta_link`` (or a saved next link).

    With no link this is a full sync. Every @odata.nextLink is followed; the
    last page carries the delta link for the next round.
    """
    url = delta_link or (
        "me/mailFolders('Inbox')/messages/delta?$select=" + ",".join(MESSAGE_FIELDS)
    )
    while url:
        data = client.get_json(
            url, headers={"Prefer": f"odata.maxpagesize={page_size}"}
        )
        removed = [item["id"] for item in data["value"] if "@removed" in item]
        page = DeltaPage(
            messages=[_message(i) for i in data["value"] if "@removed" not in i],
            removed_ids=removed,
            next_link=data.get("@odata.nextLink"),
            delta_link=data.get("@odata.deltaLink"),
        )
        yield page
        url = page.next_link


def get_message(client: GraphClient, message_id: str) -> GraphMessage:
    """Return one message with the fields Posta keeps."""
    query = "$select=" + ",".join(MESSAGE_FIELDS)
    return _message(client.get_json(f"me/messages/{_segment(message_id)}?{query}"))


def fetch_attachments(client: GraphClient, message_id: str) -> list[GraphAttachment]:
    """Return the file attachments of a message with their content."""
    data = client.get_json(f"me/messages/{_segment(message_id)}/attachments")
    attachments = []
    for item in data["value"]:
        if item.get("@odata.type") != "#microsoft.graph.fileAttachment":
            # Attached Outlook items and cloud links have no bytes to store.
            logger.info(
                "Skipping %s attachment %s", item.get("@odata.type"), item["id"]
            )
            continue
        attachments.append(
            GraphAttachment(
                id=item["id"],
                name=item.get("name") or "attachment",
                content_type=item.get("contentType") or "application/octet-stream",
                size=item.get("size") or 0,
                is_inline=bool(item.get("isInline")),
                content_id=item.get("contentId"),
                content=base64.b64decode(item.get("contentBytes") or ""),
            )
        )
    return attachments


def fetch_parallel(
    client: GraphClient,
    fetch: Callable[[GraphClient, str], T],
    message_ids: Iterable[str],
    workers: int = MAX_IN_FLIGHT_PER_MAILBOX,
) -> dict[str, T]:
    """Run ``fetch`` for many messages at once; the mailbox slots cap the load."""
    ids = list(message_ids)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda message_id: fetch(client, message_id), ids)
        return dict(zip(ids, results, strict=True))


def send_mail(
    client: GraphClient, mail: OutgoingMail, reply_to_id: str | None = None
) -> SentMail:
    """Send ``mail``; pass the Graph id of the message answered to thread a reply.

    Small mail goes out in one sendMail call; replies and mail with attachments
    of 3 MB or more are drafted, filled and sent. Graph's 4xx answers become
    PermanentSendError.
    """
    files = [(a, Path(a.path).read_bytes()) for a in mail.attachments]
    message = _graph_message(mail)
    try:
        if reply_to_id is None and _fits_inline(mail, files):
            message["attachments"] = [_inline(a, data) for a, data in files]
            client.request(
                "POST",
                "me/sendMail",
                json={"message": message, "saveToSentItems": True},
                sending=True,
            )
            return SentMail(mail.message_id, None, None)
        return _send_via_draft(client, message, files, reply_to_id)
    except GraphError as exc:
        raise PermanentSendError(
            f"Microsoft refused the message: {exc.detail}"
        ) from exc


def import_contacts(client: GraphClient, limit: int = 100) -> list[GraphContact]:
    """Return up to ``limit`` distinct addresses from the user's contacts."""
    query = urlencode(
        {"$select": "displayName,emailAddresses", "$top": min(limit, CONTACTS_PAGE)}
    )
    url: str | None = f"me/contacts?{query}"
    contacts: dict[str, GraphContact] = {}
    while url and len(contacts) < limit:
        data = client.get_json(url)
        for item in data["value"]:
            for entry in item.get("emailAddresses") or []:
                address = (entry.get("address") or "").strip()
                if address and len(contacts) < limit:
                    name = item.get("displayName") or entry.get("name") or ""
                    contacts.setdefault(address.lower(), GraphContact(name, address))
        url = data.get("@odata.nextLink")
    return list(contacts.values())


def _send_via_draft(client, message: dict, files, reply_to_id) -> SentMail:
    if reply_to_id:
        draft = client.request(
            "POST",
            f"me/messages/{_segment(reply_to_id)}/createReply",
            json={"message": message},
        ).json()
    else:
        draft = client.request("POST", "me/messages", json=message).json()
    draft_path = f"me/messages/{_segment(draft['id'])}"
    for attachment, data in files:
        if len(data) < INLINE_LIMIT:
            client.request(
                "POST", f"{draft_path}/attachments", json=_inline(attachment, data)
            )
        else:
            _upload(client, draft_path, attachment, data)
    client.request("POST", f"{draft_path}/send", sending=True)
    return SentMail(
        internet_message_id=draft["internetMessageId"],
        message_id=draft["id"],
        conversation_id=draft.get("conversationId"),
    )


def _upload(client, draft_path: str, attachment: OutgoingAttachment, data: bytes):
    """Attach a large file through an upload session, one ranged PUT at a time."""
    session = client.request(
        "POST",
        f"{draft_path}/attachments/createUploadSession",
        json={
            "AttachmentItem": {
                "attachmentType": "file",
                "name": attachment.filename,
                "size": len(data),
                "contentType": attachment.content_type or "application/octet-stream",
            }
        },
    ).json()
    for start in range(0, len(data), UPLOAD_CHUNK):
        chunk = data[start : start + UPLOAD_CHUNK]
        end = start + len(chunk) - 1
        # The upload URL is pre-authenticated; Graph refuses a bearer token there.
        client.request(
            "PUT",
            session["uploadUrl"],
            authenticated=False,
            data=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
            },
        )


def _graph_message(mail: OutgoingMail) -> dict:
    message = {
        "subject": mail.subject,
        "body": {
            "contentType": "HTML" if mail.html is not None else "Text",
            "content": mail.html if mail.html is not None else mail.text,
        },
        "toRecipients": _recipients(mail.to),
        "ccRecipients": _recipients(mail.cc),
        "bccRecipients": _recipients(mail.bcc),
        "internetMessageId": mail.message_id,
    }
    headers = []
    for name, value in mail.extra_headers.items():
        if name.lower().startswith("x-"):
            headers.append({"name": name, "value": value})
        else:
            logger.warning("Graph cannot send the %s header; dropping it", name)
    if headers:
        message["internetMessageHeaders"] = headers
    return message


def _recipients(values: list[str]) -> list[dict]:
    return [
        {"emailAddress": {"name": name or address, "address": address}}
        for name, address in email.utils.getaddresses(values)
        if address
    ]


def _fits_inline(mail: OutgoingMail, files) -> bool:
    body = len((mail.html or mail.text or "").encode())
    return body + sum(len(data) for _, data in files) < INLINE_LIMIT


def _inline(attachment: OutgoingAttachment, data: bytes) -> dict:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.filename,
        "contentType": attachment.content_type or "application/octet-stream",
        "contentBytes": base64.b64encode(data).decode(),
    }


def _message(item: dict) -> GraphMessage:
    headers = {
        h["name"].lower(): h["value"] for h in item.get("internetMessageHeaders") or []
    }
    body = item.get("body") or {}
    return GraphMessage(
        id=item["id"],
        internet_message_id=item.get("internetMessageId"),
        conversation_id=item.get("conversationId"),
        subject=item.get("subject") or "",
        sender=_recipient(item.get("from")),
        to=[r for r in map(_recipient, item.get("toRecipients") or []) if r],
        cc=[r for r in map(_recipient, item.get("ccRecipients") or []) if r],
        received_at=_parse_time(item.get("receivedDateTime")),
        has_attachments=bool(item.get("hasAttachments")),
        body_type=(body.get("contentType") or "text").lower(),
        body=body.get("content") or "",
        in_reply_to=headers.get("in-reply-to"),
        references=(headers.get("references") or "").split(),
    )


def _recipient(value: dict | None) -> Recipient | None:
    address = (value or {}).get("emailAddress") or {}
    if not address.get("address"):
        return None
    return Recipient(address.get("name") or "", address["address"])


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _is_personal_id(user_id: str) -> bool:
    """Tell a personal account by its id: 16 hex digits, where work ids are GUIDs."""
    return len(user_id) == 16 and all(c in "0123456789abcdefABCDEF" for c in user_id)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _checked(response: requests.Response, method: str, url: str):
    status = response.status_code
    if status < 400:
        return response
    code, message = _error_code(response), _error_message(response)
    detail = f"{method} {_redact(url)} answered {status} {code}: {message}"
    if status in (401, 403):
        raise AuthError(
            f"Microsoft refused access ({code}); reconnect the account. {detail}"
        )
    if status == 410 or code.lower() == "syncstatenotfound":
        raise ResyncNeeded(detail)
    if status == 404:
        raise MessageGone(detail, status, code)
    if status >= 500:
        raise TransientError(detail)
    raise GraphError(detail, status, code)


def _error_code(response: requests.Response) -> str:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""


def _error_message(response: requests.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _retry_after(response: requests.Response, attempt: int) -> float:
    """Read Retry-After (seconds or HTTP date); back off exponentially without it."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = email.utils.parsedate_to_datetime(value) if value else None
    if when is not None:
        return max(0.0, when.timestamp() - time.time())
    return float(2**attempt)


def _auth_error(exc: OAuth2Error) -> MailError:
    description = (exc.description or "").split(" Trace ID:")[0]
    if exc.error in _RECONNECT_ERRORS:
        return AuthError(
            f"Microsoft refused to renew the sign-in ({exc.error}: {description}); "
            "reconnect the account."
        )
    return TransientError(f"Microsoft could not renew the sign-in ({exc.error}).")


def _network_error(exc: requests.RequestException, sending: bool) -> MailError:
    """Classify a transport failure; a send that may have arrived is ambiguous."""
    connect_failed = isinstance(exc, requests.ConnectTimeout) or _never_connected(exc)
    if (
        sending
        and not connect_failed
        and not isinstance(exc, requests.exceptions.SSLError)
    ):
        return AmbiguousSendError()
    if isinstance(exc, requests.exceptions.SSLError):
        return TLSFailure(f"The secure connection to Microsoft failed ({exc}).")
    if isinstance(exc, requests.Timeout):
        return TimeoutFailure("Microsoft did not answer in time.")
    root = _root_os_error(exc)
    return classify_network_error(root) if root else TransientError(str(exc))


def _never_connected(exc: BaseException) -> bool:
    """Tell whether the connection failed before any byte of the request left."""
    return any(isinstance(e, NewConnectionError) for e in _chain(exc))


def _root_os_error(exc: BaseException) -> OSError | None:
    """Dig the socket-level error out of requests' and urllib3's wrappers."""
    for error in _chain(exc):
        if type(error).__module__ in ("builtins", "socket", "ssl"):
            return error if isinstance(error, OSError) else None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Walk from requests' exception down through urllib3's to the socket's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        args = [a for a in current.args if isinstance(a, BaseException)]
        current = args[0] if args else (current.__cause__ or current.__context__)


def _redact(url: str) -> str:
    """Drop the query string, which may carry an upload session's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
