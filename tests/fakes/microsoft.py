"""A local fake of Microsoft's identity platform (v2.0) and the Graph mail API.

One WSGI app on 127.0.0.1 serves both, mirroring Microsoft's paths:
``/{tenant}/oauth2/v2.0/authorize`` and ``/token`` for sign-in, ``/v1.0/me/...``
for Graph, and ``/upload/{session}`` standing in for the pre-authenticated
upload URLs that Graph hands out. Shapes follow Microsoft's documentation:
AADSTS error JSON on the token endpoint, ``{"error": {"code", "message"}}`` on
Graph, delta rounds with @odata.nextLink/@odata.deltaLink, 410 for a lost sync
state, 429/503 with Retry-After, and the 4-requests-in-flight limit per mailbox.

Two deliberate departures make client bugs visible: a refresh token is dead as
soon as it has been used (Microsoft keeps the old one alive for a while), and an
access token only works while it is in the fake's memory.
"""

import base64
import hashlib
import html
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_SECRET = "fake-client-secret"
REDIRECT_URI = "http://127.0.0.1/auth/microsoft/callback"
SCOPES = ("offline_access", "User.Read", "Mail.ReadWrite", "Mail.Send", "Contacts.Read")

# AADSTS code -> (OAuth error, description), as the identity platform words them.
AADSTS = {
    50020: (
        "invalid_request",
        "User account from identity provider does not exist in tenant and cannot "
        "access the application in that tenant.",
    ),
    50076: (
        "interaction_required",
        "Due to a configuration change made by your administrator, you must use "
        "multi-factor authentication to access the resource.",
    ),
    50173: (
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth "
        "token is needed.",
    ),
    50194: (
        "invalid_request",
        "Application is not configured as a multi-tenant application.",
    ),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new "
        "valid code or use an existing refresh token.",
    ),
    65001: (
        "consent_required",
        "The user or administrator has not consented to use the application.",
    ),
    65004: ("access_denied", "User declined to consent to access the app."),
    70000: ("invalid_grant", "Provided grant is invalid or malformed."),
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to "
        "inactivity.",
    ),
    700082: (
        "invalid_grant",
        "The refresh token has expired due to inactivity.",
    ),
    501481: (
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the "
        "authorization request.",
    ),
    7000215: ("invalid_client", "Invalid client secret provided."),
    700016: ("unauthorized_client", "Application was not found in the directory."),
}

WELL_KNOWN_FOLDERS = ("inbox", "sentitems", "drafts")
MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass
class RequestRecord:
    """One request the fake answered."""

    method: str
    path: str
    status: int
    time: float
    mailbox: str | None = None


@dataclass
class SentMessage:
    """A message a user sent through Graph, as the recipients would see it."""

    user: str
    message: dict
    headers: dict[str, str]
    attachments: list[dict]
    via: str


@dataclass
class FakeUser:
    """A Microsoft account with its mailbox and contacts."""

    id: str
    address: str
    display_name: str
    personal: bool
    messages: dict[str, dict] = field(default_factory=dict)
    contacts: list[dict] = field(default_factory=list)
    seq: int = 0


@dataclass
class _Code:
    user: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    challenge: str | None
    method: str
    expires_at: float
    used: bool = False


@dataclass
class _Refresh:
    user: str
    scopes: list[str]
    expires_at: float
    dead_reason: int | None = None


@dataclass
class _Cursor:
    user: str
    folder: str
    since: int
    upto: int
    offset: int
    select: list[str] | None


@dataclass
class _Upload:
    user: str
    message_id: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    received: bytearray = field(default_factory=bytearray)


@dataclass
class _Limits:
    max_in_flight: int | None = 4
    retry_after: float = 1.0
    budget: int | None = None
    window: float = 600.0


class FakeMicrosoft:
    """Identity platform + Graph on 127.0.0.1 with knobs for errors and limits."""

    def __init__(
        self,
        *,
        tenant: str = "common",
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
    ):
        self.tenant = tenant
        self._client = (client_id, client_secret, tuple(redirect_uris))
        self._server = None
        self._thread = None
        self._lock = threading.RLock()
        self.reset()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "FakeMicrosoft":
        """Serve on a free loopback port in a background thread."""
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def reset(self) -> None:
        """Forget users, tokens, scripts and logs; keep the port and client."""
        with self._lock:
            self.client_id, self.client_secret, redirect_uris = self._client
            self.redirect_uris = list(redirect_uris)
            self.users: dict[str, FakeUser] = {}
            self.requests: list[RequestRecord] = []
            self.sent: list[SentMessage] = []
            self.max_in_flight_seen: dict[str, int] = {}
            self.signed_in: str | None = None
            self.token_ttl = 3599
            self.code_ttl = 600.0
            self.refresh_ttl = 90 * 24 * 3600.0
            self.grant_offline_access = True
            self.default_page_size = 10
            self.max_page_size = 1000
            self.latency = 0.0
            self._limits = _Limits()
            self._in_flight: dict[str, int] = {}
            self._budget: dict[str, deque] = {}
            self._pending: dict[str, dict] = {}
            self._codes: dict[str, _Code] = {}
            self._refresh: dict[str, _Refresh] = {}
            self._access: dict[str, tuple[str, float]] = {}
            self._cursors: dict[str, _Cursor] = {}
            self._uploads: dict[str, _Upload] = {}
            self._authorize_errors: deque = deque()
            self._token_errors: deque = deque()
            self._graph_errors: deque = deque()

    @property
    def base_url(self) -> str:
        """Return http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def authority_url(self) -> str:
        """Return the authority, like https://login.microsoftonline.com/{tenant}."""
        return f"{self.base_url}/{self.tenant}"

    @property
    def authorize_url(self) -> str:
        """Return the v2.0 authorize endpoint."""
        return f"{self.authority_url}/oauth2/v2.0/authorize"

    @property
    def token_url(self) -> str:
        """Return the v2.0 token endpoint."""
        return f"{self.authority_url}/oauth2/v2.0/token"

    @property
    def graph_url(self) -> str:
        """Return the Graph v1.0 root, like https://graph.microsoft.com/v1.0."""
        return f"{self.base_url}/v1.0"

    # -- test-side knobs ---------------------------------------------------

    def add_user(
        self, address: str, display_name: str = "", personal: bool = False
    ) -> FakeUser:
        """Create an account; personal (MSA) ids are 16 hex digits, work ids GUIDs."""
        user_id = secrets.token_hex(8) if personal else str(uuid.uuid4())
        user = FakeUser(user_id, address, display_name or address, personal)
        with self._lock:
            self.users[address.lower()] = user
        return user

    def grant(self, address: str, scopes: tuple[str, ...] = SCOPES) -> dict:
        """Mint tokens as if the user had consented; add expires_at like clients do."""
        with self._lock:
            body = json.loads(self._issue(address.lower(), list(scopes)).get_data())
        body["expires_at"] = time.time() + body["expires_in"]
        return body

    def sign_in(self, address: str) -> None:
        """Make the consent page act for this user when no login_hint is sent."""
        self.signed_in = address.lower()

    def fail_next_authorize(self, code: int, error: str | None = None) -> None:
        """Make the next authorize request redirect back with this AADSTS error."""
        self._authorize_errors.append((code, error))

    def fail_next_token(
        self, code: int, error: str | None = None, status: int = 400
    ) -> None:
        """Make the next token request fail with this AADSTS error."""
        self._token_errors.append((code, error, status))

    def fail_next_graph(
        self,
        status: int = 503,
        code: str = "ServiceUnavailable",
        retry_after: float | None = 1.0,
        times: int = 1,
        path: str = "",
    ) -> None:
        """Make the next Graph requests (whose path contains ``path``) fail."""
        for _ in range(times):
            self._graph_errors.append((status, code, retry_after, path))

    def limits(
        self,
        max_in_flight: int | None = 4,
        retry_after: float = 1.0,
        budget: int | None = None,
        window: float = 600.0,
    ) -> None:
        """Throttle with 429 past max_in_flight per mailbox or budget per window."""
        with self._lock:
            self._limits = _Limits(max_in_flight, retry_after, budget, window)
            self._budget.clear()

    def revoke_refresh_tokens(self, address: str) -> None:
        """Revoke every refresh token of the user, as a password reset does."""
        with self._lock:
            for grant in self._refresh.values():
                if grant.user == address.lower() and grant.dead_reason is None:
                    grant.dead_reason = 50173

    def expire_access_tokens(self) -> None:
        """Make every issued access token fail with 401 from now on."""
        with self._lock:
            self._access = {k: (u, 0.0) for k, (u, _) in self._access.items()}

    def expire_delta_tokens(self) -> None:
        """Drop every sync state so each outstanding delta/next link answers 410."""
        with self._lock:
            self._cursors.clear()

    def deliver(self, address: str, message: dict | None = None, **fields) -> str:
        """Put a message in the user's Inbox and return its Graph id.

        Fields: subject, sender ("addr" or (name, addr)), to, cc, body_html,
        body_text, internet_message_id, in_reply_to, references, conversation_id,
        attachments [(name, content_type, bytes)], received (datetime).
        A ready Graph message dict may be passed instead.
        """
        with self._lock:
            user = self.users[address.lower()]
            record = message or self._message_from_fields(user, fields)
            return self._store(user, record, "inbox", fields.get("attachments", ()))

    def delete_message(self, address: str, message_id: str) -> None:
        """Delete a message; the next delta round reports it as @removed."""
        with self._lock:
            user = self.users[address.lower()]
            record = user.messages[message_id]
            record["_removed"] = True
            record["_seq"] = self._next_seq(user)

    def add_contact(self, address: str, display_name: str, *emails: str) -> None:
        """Add a personal contact with one or more email addresses."""
        with self._lock:
            user = self.users[address.lower()]
            user.contacts.append(
                {
                    "id": _graph_id(),
                    "displayName": display_name,
                    "emailAddresses": [
                        {"name": display_name, "address": e} for e in emails
                    ],
                }
            )

    def folder(self, address: str, folder: str) -> list[dict]:
        """Return the live messages of one well-known folder, oldest first."""
        user = self.users[address.lower()]
        return [
            _public(m, None)
            for m in sorted(user.messages.values(), key=lambda m: m["_seq"])
            if m["_folder"] == folder and not m.get("_removed")
        ]

    def count(self, path_part: str = "", method: str | None = None) -> int:
        """Count logged requests whose path contains path_part."""
        return sum(
            1
            for r in self.requests
            if path_part in r.path and (method is None or r.method == method)
        )

    # -- WSGI plumbing -----------------------------------------------------

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        mailbox = None
        try:
            if request.path.startswith("/v1.0/"):
                response, mailbox = self._graph(request)
            elif request.path.startswith("/upload/"):
                response, mailbox = self._upload_put(request)
            else:
                response = self._identity(request)
        except Exception as exc:  # surface fake bugs as 500s, not hung tests
            response = _graph_error(500, "FakeBug", repr(exc))
        with self._lock:
            self.requests.append(
                RequestRecord(
                    request.method,
                    request.full_path.rstrip("?"),
                    response.status_code,
                    time.time(),
                    mailbox,
                )
            )
        return response(environ, start_response)

    # -- identity platform -------------------------------------------------

    def _identity(self, request: Request) -> Response:
        match = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/(authorize|token)", request.path)
        if not match:
            return Response("Not found", 404)
        if match.group(2) == "token":
            return self._token(request)
        if request.method == "POST":
            return self._consent_answer(request)
        return self._authorize(request)

    def _authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") != self.client_id:
            return _error_page(700016, args.get("client_id", ""))
        redirect_uri = args.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return _error_page(50011, redirect_uri)
        state = args.get("state")
        if self._authorize_errors:
            code, error = self._authorize_errors.popleft()
            return _redirect_error(redirect_uri, state, code, error)
        if args.get("response_type") != "code":
            return _redirect(
                redirect_uri,
                {"error": "unsupported_response_type", "state": state},
            )
        method = args.get("code_challenge_method", "plain")
        if args.get("code_challenge") and method not in ("S256", "plain"):
            return _redirect_error(redirect_uri, state, 70000, "invalid_request")
        user = self._user_for(args.get("login_hint"))
        if user is None:
            return _error_page(50020, args.get("login_hint", ""))
        pending = secrets.token_urlsafe(16)
        self._pending[pending] = {
            "user": user.address.lower(),
            "redirect_uri": redirect_uri,
            "state": state,
            "scopes": args.get("scope", "").split(),
            "challenge": args.get("code_challenge"),
            "method": method,
        }
        return _consent_page(request.path, pending, user, args.get("scope", ""))

    def _user_for(self, login_hint: str | None) -> FakeUser | None:
        key = (login_hint or self.signed_in or "").lower()
        if key:
            return self.users.get(key)
        return next(iter(self.users.values()), None)

    def _consent_answer(self, request: Request) -> Response:
        pending = self._pending.pop(request.form.get("pending", ""), None)
        if pending is None:
            return Response("This sign-in request is no longer valid.", 400)
        state = pending["state"]
        if request.form.get("action") != "accept":
            return _redirect_error(pending["redirect_uri"], state, 65004, None)
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            user=pending["user"],
            client_id=self.client_id,
            redirect_uri=pending["redirect_uri"],
            scopes=pending["scopes"],
            challenge=pending["challenge"],
            method=pending["method"],
            expires_at=time.time() + self.code_ttl,
        )
        params = {"code": code, "state": state, "session_state": str(uuid.uuid4())}
        return _redirect(pending["redirect_uri"], params)

    def consent(self, authorize_url: str, accept: bool = True) -> str:
        """Drive the consent page over HTTP; return the redirect back to the app."""
        page = requests.get(authorize_url, allow_redirects=False, timeout=5)
        if page.status_code in (301, 302, 303):
            return page.headers["Location"]
        pending = re.search(r'name="pending" value="([^"]+)"', page.text)
        if not pending:
            raise AssertionError(f"no consent form: {page.status_code} {page.text}")
        answer = requests.post(
            authorize_url.split("?")[0],
            data={"pending": pending.group(1), "action": "accept" if accept else ""},
            allow_redirects=False,
            timeout=5,
        )
        return answer.headers["Location"]

    def _token(self, request: Request) -> Response:
        form = request.form
        client_id, secret = _client_credentials(request)
        if client_id != self.client_id:
            return _aad_error(700016, status=400)
        if secret != self.client_secret:
            return _aad_error(7000215, status=401)
        if self._token_errors:
            code, error, status = self._token_errors.popleft()
            return _aad_error(code, error, status)
        grant_type = form.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                return self._redeem_code(form)
            if grant_type == "refresh_token":
                return self._redeem_refresh(form)
        return _aad_error(70000, "unsupported_grant_type")

    def _redeem_code(self, form) -> Response:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            return _aad_error(70000)
        if code.used:
            return _aad_error(54005)
        code.used = True
        if code.expires_at < time.time():
            return _aad_error(70008)
        if form.get("redirect_uri") != code.redirect_uri:
            return _aad_error(70000)
        if code.challenge and not _pkce_ok(
            form.get("code_verifier", ""), code.challenge, code.method
        ):
            return _aad_error(501481)
        return self._issue(code.user, code.scopes)

    def _redeem_refresh(self, form) -> Response:
        grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None:
            return _aad_error(70000)
        if grant.dead_reason:
            return _aad_error(grant.dead_reason)
        if grant.expires_at < time.time():
            return _aad_error(700082)
        # Rotation: the used refresh token dies now (stricter than Microsoft).
        grant.dead_reason = 70000
        scopes = form.get("scope", "").split() or grant.scopes
        return self._issue(grant.user, scopes)

    def _issue(self, user: str, scopes: list[str]) -> Response:
        access = secrets.token_urlsafe(48)
        self._access[access] = (user, time.time() + self.token_ttl)
        body = {
            "token_type": "Bearer",
            # Microsoft never lists offline_access among the granted scopes.
            "scope": " ".join(s for s in scopes if s != "offline_access"),
            "expires_in": self.token_ttl,
            "ext_expires_in": self.token_ttl,
            "access_token": access,
        }
        if "offline_access" in scopes and self.grant_offline_access:
            refresh = secrets.token_urlsafe(64)
            self._refresh[refresh] = _Refresh(
                user, scopes, time.time() + self.refresh_ttl
            )
            body["refresh_token"] = refresh
        return _json(body, headers={"Cache-Control": "no-store"})

    # -- Graph -------------------------------------------------------------

    def _graph(self, request: Request) -> tuple[Response, str | None]:
        user, problem = self._bearer_user(request)
        if problem:
            return problem, None
        mailbox = user.address.lower()
        rejected = self._admit(mailbox, request.path)
        if rejected:
            return rejected, mailbox
        try:
            if self.latency:
                time.sleep(self.latency)
            if request.content_length and request.content_length > MAX_REQUEST_BYTES:
                return _graph_error(
                    413,
                    "RequestBodyTooLarge",
                    "The maximum request length supported is 4MB.",
                ), mailbox
            with self._lock:
                return self._route(request, user), mailbox
        finally:
            with self._lock:
                self._in_flight[mailbox] -= 1

    def _bearer_user(self, request: Request):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return None, _unauthorized("Access token is empty.")
        with self._lock:
            entry = self._access.get(header[7:].strip())
        if entry is None:
            return None, _unauthorized("IDX14100: JWT is not well formed.")
        address, expires_at = entry
        if expires_at < time.time():
            return None, _unauthorized(
                "Lifetime validation failed, the token is expired."
            )
        return self.users[address], None

    def _admit(self, mailbox: str, path: str) -> Response | None:
        """Count the request in flight, or answer it with a scripted 429/503."""
        with self._lock:
            in_flight = self._in_flight.get(mailbox, 0) + 1
            seen = self.max_in_flight_seen.get(mailbox, 0)
            self.max_in_flight_seen[mailbox] = max(seen, in_flight)
            limits = self._limits
            for index, (status, code, retry_after, part) in enumerate(
                self._graph_errors
            ):
                if part in path:
                    del self._graph_errors[index]
                    return _graph_error(status, code, code, retry_after)
            if limits.max_in_flight is not None and in_flight > limits.max_in_flight:
                return _graph_error(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    limits.retry_after,
                )
            if limits.budget is not None:
                window = self._budget.setdefault(mailbox, deque())
                now = time.time()
                while window and window[0] < now - limits.window:
                    window.popleft()
                if len(window) >= limits.budget:
                    return _graph_error(
                        429, "TooManyRequests", "Too many requests.", limits.retry_after
                    )
                window.append(now)
            self._in_flight[mailbox] = in_flight
        return None

    def _route(self, request: Request, user: FakeUser) -> Response:
        path = request.path[len("/v1.0") :]
        method = request.method
        for verb, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, path, re.IGNORECASE)
            if match and verb == method:
                return handler(self, request, user, *match.groups())
        return _graph_error(400, "BadRequest", f"Unsupported request {method} {path}")

    def _me(self, request, user):
        body = {
            "@odata.context": f"{self.graph_url}/$metadata#users/$entity",
            "id": user.id,
            "displayName": user.display_name,
            # Personal accounts often have no mail; their address is the UPN.
            "mail": None if user.personal else user.address,
            "userPrincipalName": user.address,
            "businessPhones": [],
            "preferredLanguage": "en-US",
        }
        return _json(_selected(body, _select(request)))

    def _delta(self, request, user, quoted, plain):
        folder = (quoted or plain).lower()
        if folder not in WELL_KNOWN_FOLDERS:
            return _graph_error(404, "ErrorItemNotFound", "Folder not found.")
        token = request.args.get("$skiptoken") or request.args.get("$deltatoken")
        if token:
            # Links stay valid after use, so a client may retry one after a failure.
            saved = self._cursors.get(token)
            if saved is None or saved.user != user.address.lower():
                return _graph_error(
                    410,
                    "SyncStateNotFound",
                    "The sync state is not found or has expired. Restart the sync "
                    "without a state token.",
                )
            cursor = replace(saved)
            if "$deltatoken" in request.args:
                cursor.since, cursor.offset, cursor.upto = saved.upto, 0, user.seq
        else:
            cursor = _Cursor(user.address.lower(), folder, 0, user.seq, 0, None)
            cursor.select = _select(request)
        return self._delta_page(request, user, cursor)

    def _delta_page(self, request, user, cursor: _Cursor) -> Response:
        changed = sorted(
            (
                m
                for m in user.messages.values()
                if m["_folder"] == cursor.folder
                and cursor.since < m["_seq"] <= cursor.upto
            ),
            key=lambda m: m["_seq"],
        )
        size = _page_size(request, self.default_page_size, self.max_page_size)
        page = changed[cursor.offset : cursor.offset + size]
        cursor.offset += len(page)
        token = secrets.token_urlsafe(24)
        self._cursors[token] = replace(cursor)
        link = f"{self.graph_url}/me/mailFolders('{cursor.folder}')/messages/delta"
        body = {"@odata.context": f"{self.graph_url}/$metadata#Collection(message)"}
        if cursor.offset < len(changed):
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}"
        else:
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token}"
        body["value"] = [_delta_item(m, cursor.select) for m in page]
        return _json(body)

    def _get_message(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None or record.get("_removed"):
            return _not_found()
        return _json(_public(record, _select(request)))

    def _list_attachments(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None or record.get("_removed"):
            return _not_found()
        return _json({"value": record["_attachments"]})

    def _add_attachment(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None:
            return _not_found()
        if not record["isDraft"]:
            return _graph_error(403, "ErrorAccessDenied", "The item is not a draft.")
        body = request.get_json()
        attachment = _file_attachment(
            body["name"],
            body.get("contentType", "application/octet-stream"),
            base64.b64decode(body["contentBytes"]),
            body.get("isInline", False),
        )
        record["_attachments"].append(attachment)
        record["hasAttachments"] = True
        return _json(attachment, 201)

    def _create_upload(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None:
            return _not_found()
        item = request.get_json().get("AttachmentItem") or {}
        if item.get("attachmentType") != "file" or not item.get("size"):
            return _graph_error(400, "ErrorInvalidRequest", "AttachmentItem invalid.")
        session = secrets.token_urlsafe(16)
        self._uploads[session] = _Upload(
            user.address.lower(),
            message_id,
            item.get("name", "attachment"),
            item.get("contentType", "application/octet-stream"),
            int(item["size"]),
            bool(item.get("isInline", False)),
        )
        body = {
            "@odata.context": f"{self.graph_url}/$metadata#microsoft.graph."
            "uploadSession",
            "uploadUrl": f"{self.base_url}/upload/{session}?authtoken="
            + secrets.token_urlsafe(24),
            "expirationDateTime": _iso(time.time() + 900),
            "nextExpectedRanges": ["0-"],
        }
        return _json(body, 201)

    def _upload_put(self, request: Request) -> tuple[Response, str | None]:
        session = request.path.rsplit("/", 1)[-1]
        with self._lock:
            upload = self._uploads.get(session)
        if upload is None or "authtoken" not in request.args:
            return _graph_error(404, "ErrorItemNotFound", "Upload session gone."), None
        if request.headers.get("Authorization"):
            # The upload URL carries its own token; Graph refuses a second one.
            return _unauthorized("Do not send an Authorization header."), None
        rejected = self._admit(upload.user, request.path)
        if rejected:
            return rejected, upload.user
        try:
            return self._store_range(request, session, upload), upload.user
        finally:
            with self._lock:
                self._in_flight[upload.user] -= 1

    def _store_range(self, request, session: str, upload: _Upload) -> Response:
        match = re.fullmatch(
            r"bytes (\d+)-(\d+)/(\d+)", request.headers.get("Content-Range", "")
        )
        data = request.get_data()
        if not match:
            return _graph_error(400, "InvalidRange", "Content-Range is required.")
        start, end, total = map(int, match.groups())
        expected = len(upload.received)
        if start != expected or end - start + 1 != len(data) or total != upload.size:
            return _graph_error(416, "InvalidRange", f"Expected range {expected}-.")
        with self._lock:
            upload.received.extend(data)
            if len(upload.received) < upload.size:
                body = {
                    "expirationDateTime": _iso(time.time() + 900),
                    "nextExpectedRanges": [str(len(upload.received))],
                }
                return _json(body)
            del self._uploads[session]
            user = self.users[upload.user]
            record = user.messages[upload.message_id]
            attachment = _file_attachment(
                upload.name, upload.content_type, bytes(upload.received), False
            )
            record["_attachments"].append(attachment)
            record["hasAttachments"] = True
        location = (
            f"{self.graph_url}/me/messages('{upload.message_id}')"
            f"/attachments('{attachment['id']}')"
        )
        return Response(status=201, headers={"Location": location})

    def _create_draft(self, request, user):
        fields = request.get_json() or {}
        problem = _check_headers(fields)
        if problem:
            return problem
        record = self._draft_record(user, fields)
        self._store(user, record, "drafts", ())
        return _json(_public(record, None), 201)

    def _create_reply(self, request, user, message_id):
        original = user.messages.get(message_id)
        if original is None or original.get("_removed"):
            return _not_found()
        fields = (request.get_json(silent=True) or {}).get("message", {})
        problem = _check_headers(fields)
        if problem:
            return problem
        fields.setdefault("subject", "RE: " + (original.get("subject") or ""))
        fields.setdefault("toRecipients", [original["from"]])
        record = self._draft_record(user, fields)
        record["conversationId"] = original["conversationId"]
        references = _header(original, "References") or ""
        record["_reply_headers"] = {
            "In-Reply-To": original["internetMessageId"],
            "References": f"{references} {original['internetMessageId']}".strip(),
        }
        self._store(user, record, "drafts", ())
        return _json(_public(record, None), 201)

    def _update_draft(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None:
            return _not_found()
        for key, value in (request.get_json() or {}).items():
            if key == "internetMessageId" and not record["isDraft"]:
                return _graph_error(400, "ErrorInvalidPropertyUpdateSentMessage", key)
            record[key] = value
        record["lastModifiedDateTime"] = _iso(time.time())
        return _json(_public(record, None))

    def _send_draft(self, request, user, message_id):
        record = user.messages.get(message_id)
        if record is None or not record["isDraft"]:
            return _not_found()
        if not _recipients(record):
            return _graph_error(
                400, "ErrorInvalidRecipients", "At least one recipient is not valid."
            )
        record["isDraft"] = False
        record["_folder"] = "sentitems"
        record["_seq"] = self._next_seq(user)
        if not _immutable_ids(request):
            # Without Prefer IdType="ImmutableId" an item's id changes on a move.
            user.messages.pop(message_id)
            record["id"] = _graph_id()
            user.messages[record["id"]] = record
        self._record_sent(user, record, "draft")
        return Response(status=202)

    def _send_mail(self, request, user):
        body = request.get_json() or {}
        fields = body.get("message")
        if not fields:
            return _graph_error(400, "ErrorInvalidRequest", "message is required.")
        problem = _check_headers(fields)
        if problem:
            return problem
        record = self._draft_record(user, fields)
        if not _recipients(record):
            return _graph_error(
                400, "ErrorInvalidRecipients", "At least one recipient is not valid."
            )
        attachments = [
            _file_attachment(
                a["name"],
                a.get("contentType", "application/octet-stream"),
                base64.b64decode(a["contentBytes"]),
                a.get("isInline", False),
            )
            for a in fields.get("attachments", [])
        ]
        record["isDraft"] = False
        record["_attachments"] = attachments
        record["hasAttachments"] = bool(attachments)
        if body.get("saveToSentItems", True):
            self._store(user, record, "sentitems", ())
        self._record_sent(user, record, "sendMail")
        return Response(status=202)

    def _contacts(self, request, user):
        top = min(int(request.args.get("$top", 10)), 1000)
        skip = int(request.args.get("$skip", 0))
        page = user.contacts[skip : skip + top]
        select = _select(request)
        body = {
            "@odata.context": f"{self.graph_url}/$metadata#users('{user.id}')/contacts",
            "value": [_selected(dict(c), select) for c in page],
        }
        if skip + top < len(user.contacts):
            query = {"$top": top, "$skip": skip + top}
            if select:
                query["$select"] = ",".join(select)
            body["@odata.nextLink"] = f"{self.graph_url}/me/contacts?{urlencode(query)}"
        return _json(body)

    # -- mailbox internals -------------------------------------------------

    def _next_seq(self, user: FakeUser) -> int:
        user.seq += 1
        return user.seq

    def _store(self, user, record: dict, folder: str, attachments) -> str:
        record.setdefault("id", _graph_id())
        record["_folder"] = folder
        record["parentFolderId"] = folder
        record["_seq"] = self._next_seq(user)
        record.setdefault("_attachments", [])
        for name, content_type, content in attachments:
            record["_attachments"].append(
                _file_attachment(name, content_type, content, False)
            )
        record["hasAttachments"] = bool(record["_attachments"])
        user.messages[record["id"]] = record
        return record["id"]

    def _message_from_fields(self, user: FakeUser, fields: dict) -> dict:
        now = fields.get("received") or datetime.now(UTC)
        message_id = fields.get("internet_message_id") or _message_id()
        in_reply_to = fields.get("in_reply_to")
        references = fields.get("references") or ([in_reply_to] if in_reply_to else [])
        sender = _address(fields.get("sender", "someone@example.test"))
        to = [_address(a) for a in fields.get("to", [user.address])]
        cc = [_address(a) for a in fields.get("cc", [])]
        headers = [
            {"name": "Message-ID", "value": message_id},
            {"name": "From", "value": _render(sender)},
            {"name": "To", "value": ", ".join(_render(a) for a in to)},
            {"name": "Subject", "value": fields.get("subject", "")},
        ]
        if in_reply_to:
            headers.append({"name": "In-Reply-To", "value": in_reply_to})
        if references:
            headers.append({"name": "References", "value": " ".join(references)})
        html_body = fields.get("body_html")
        text = fields.get("body_text", "")
        return {
            "createdDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastModifiedDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "receivedDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sentDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "internetMessageId": message_id,
            "subject": fields.get("subject", ""),
            "bodyPreview": (text or html_body or "")[:255],
            "importance": "normal",
            "conversationId": fields.get("conversation_id")
            or self._conversation_for(user, references),
            "isRead": False,
            "isDraft": False,
            "body": {
                "contentType": "html" if html_body is not None else "text",
                "content": html_body if html_body is not None else text,
            },
            "sender": sender,
            "from": sender,
            "toRecipients": to,
            "ccRecipients": cc,
            "bccRecipients": [],
            "replyTo": [],
            "internetMessageHeaders": headers,
        }

    def _conversation_for(self, user: FakeUser, references: list[str]) -> str:
        """Thread like Exchange: join the conversation of a referenced message."""
        wanted = set(references)
        for record in user.messages.values():
            if record.get("internetMessageId") in wanted:
                return record["conversationId"]
        return _graph_id()

    def _draft_record(self, user: FakeUser, fields: dict) -> dict:
        now = _iso(time.time())
        me = {"emailAddress": {"name": user.display_name, "address": user.address}}
        record = {
            "createdDateTime": now,
            "lastModifiedDateTime": now,
            "receivedDateTime": now,
            "sentDateTime": now,
            "subject": fields.get("subject", ""),
            "body": _lower_body(fields.get("body") or {}),
            "importance": "normal",
            "isRead": True,
            "isDraft": True,
            "sender": me,
            "from": me,
            "toRecipients": fields.get("toRecipients", []),
            "ccRecipients": fields.get("ccRecipients", []),
            "bccRecipients": fields.get("bccRecipients", []),
            "replyTo": [],
            "internetMessageId": fields.get("internetMessageId") or _message_id(),
            "conversationId": _graph_id(),
            "internetMessageHeaders": fields.get("internetMessageHeaders", []),
            "_attachments": [],
            "_seq": 0,
        }
        record["bodyPreview"] = record["body"].get("content", "")[:255]
        return record

    def _record_sent(self, user: FakeUser, record: dict, via: str) -> None:
        headers = {
            "From": _render(record["from"]),
            "To": ", ".join(_render(a) for a in record["toRecipients"]),
            "Subject": record["subject"],
            "Message-ID": record["internetMessageId"],
        }
        if record["ccRecipients"]:
            headers["Cc"] = ", ".join(_render(a) for a in record["ccRecipients"])
        headers.update(record.get("_reply_headers", {}))
        for header in record["internetMessageHeaders"]:
            headers[header["name"]] = header["value"]
        record["internetMessageHeaders"] = [
            {"name": k, "value": v} for k, v in headers.items()
        ]
        attachments = [
            {
                "name": a["name"],
                "content_type": a["contentType"],
                "content": base64.b64decode(a["contentBytes"]),
            }
            for a in record["_attachments"]
        ]
        self.sent.append(
            SentMessage(user.address, _public(record, None), headers, attachments, via)
        )
        self._deliver_locally(record)

    def _deliver_locally(self, record: dict) -> None:
        """Hand the message to recipients who are users of this fake too."""
        for recipient in _recipients(record):
            target = self.users.get(recipient["emailAddress"]["address"].lower())
            if target is None:
                continue
            public = {k: v for k, v in record.items() if not k.startswith("_")}
            copy = json.loads(json.dumps(public))
            copy.pop("id", None)
            copy["isRead"] = False
            copy["_attachments"] = list(record["_attachments"])
            self._store(target, copy, "inbox", ())


_ROUTES = [
    ("GET", r"/me", FakeMicrosoft._me),
    (
        "GET",
        r"/me/mailFolders(?:\('([^']+)'\)|/([^/]+))/messages/delta",
        FakeMicrosoft._delta,
    ),
    ("GET", r"/me/messages/([^/]+)", FakeMicrosoft._get_message),
    ("PATCH", r"/me/messages/([^/]+)", FakeMicrosoft._update_draft),
    ("GET", r"/me/messages/([^/]+)/attachments", FakeMicrosoft._list_attachments),
    ("POST", r"/me/messages/([^/]+)/attachments", FakeMicrosoft._add_attachment),
    (
        "POST",
        r"/me/messages/([^/]+)/attachments/createUploadSession",
        FakeMicrosoft._create_upload,
    ),
    ("POST", r"/me/messages", FakeMicrosoft._create_draft),
    ("POST", r"/me/messages/([^/]+)/createReply", FakeMicrosoft._create_reply),
    ("POST", r"/me/messages/([^/]+)/send", FakeMicrosoft._send_draft),
    ("POST", r"/me/sendMail", FakeMicrosoft._send_mail),
    ("GET", r"/me/contacts", FakeMicrosoft._contacts),
]

_ids = itertools.count(1)


def _graph_id() -> str:
    return "AAMkAG" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


def _message_id() -> str:
    return f"<{secrets.token_hex(12)}.{next(_ids)}@fake.outlook.test>"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body), status, headers=headers, content_type="application/json"
    )


def _graph_error(
    status: int, code: str, message: str, retry_after: float | None = None
) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _iso(time.time()),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return _json(body, status, headers)


def _unauthorized(message: str) -> Response:
    response = _graph_error(401, "InvalidAuthenticationToken", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
    return response


def _not_found() -> Response:
    return _graph_error(
        404, "ErrorItemNotFound", "The specified object was not found in the store."
    )


def _aad_error(code: int, error: str | None = None, status: int = 400) -> Response:
    default_error, text = AADSTS.get(code, ("invalid_request", "Request failed."))
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error or default_error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} "
        f"Correlation ID: {correlation} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
    }
    return _json(body, status)


def _error_page(code: int, detail: str) -> Response:
    """Errors Microsoft shows itself: it will not redirect to an unknown client."""
    text = AADSTS.get(code, ("", "The request is not valid."))[1]
    page = f"<h1>Sign in</h1><p>AADSTS{code}: {html.escape(text)} {html.escape(detail)}"
    return Response(page, 400, content_type="text/html")


def _redirect(uri: str, params: dict) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in uri else "?"
    return Response(status=302, headers={"Location": f"{uri}{separator}{query}"})


def _redirect_error(uri: str, state, code: int, error: str | None) -> Response:
    default_error, text = AADSTS.get(code, ("invalid_request", "Request failed."))
    params = {
        "error": error or default_error,
        "error_description": f"AADSTS{code}: {text}",
        "error_codes": str(code),
        "state": state,
    }
    return _redirect(uri, params)


def _consent_page(action: str, pending: str, user: FakeUser, scope: str) -> Response:
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in scope.split())
    page = f"""<!doctype html>
<html><head><title>Permissions requested</title></head><body>
<h1>Permissions requested</h1>
<p id="account">{html.escape(user.address)}</p>
<ul id="scopes">{scopes}</ul>
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="pending" value="{pending}">
<button id="accept" type="submit" name="action" value="accept">Accept</button>
<button id="cancel" type="submit" name="action" value="cancel">Cancel</button>
</form></body></html>"""
    return Response(page, 200, content_type="text/html")


def _client_credentials(request: Request) -> tuple[str | None, str | None]:
    if request.authorization and request.authorization.type == "basic":
        return request.authorization.username, request.authorization.password
    return request.form.get("client_id"), request.form.get("client_secret")


def _pkce_ok(verifier: str, challenge: str, method: str) -> bool:
    if method == "plain":
        return secrets.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode()).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets.compare_digest(computed, challenge)


def _select(request: Request) -> list[str] | None:
    value = request.args.get("$select")
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _selected(body: dict, select: list[str] | None) -> dict:
    if not select:
        return body
    wanted = {s.lower() for s in select} | {"id"}
    return {k: v for k, v in body.items() if k.lower() in wanted or k[0] == "@"}


def _public(record: dict, select: list[str] | None) -> dict:
    body = {"@odata.type": "#microsoft.graph.message"}
    body["@odata.etag"] = f'W/"{record["_seq"]}"'
    body |= {k: v for k, v in record.items() if not k.startswith("_")}
    # Graph returns the headers only when $select asks for them.
    if not select or "internetmessageheaders" not in {s.lower() for s in select}:
        body.pop("internetMessageHeaders", None)
    return _selected(body, select)


def _delta_item(record: dict, select: list[str] | None) -> dict:
    if record.get("_removed"):
        return {
            "@odata.type": "#microsoft.graph.message",
            "id": record["id"],
            "@removed": {"reason": "deleted"},
        }
    return _public(record, select)


def _page_size(request: Request, default: int, maximum: int) -> int:
    prefer = ",".join(request.headers.getlist("Prefer"))
    match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
    return min(int(match.group(1)), maximum) if match else default


def _immutable_ids(request: Request) -> bool:
    prefer = ",".join(request.headers.getlist("Prefer"))
    return 'idtype="immutableid"' in prefer.lower().replace(" ", "")


def _check_headers(fields: dict) -> Response | None:
    for header in fields.get("internetMessageHeaders", []):
        if not header.get("name", "").lower().startswith("x-"):
            return _graph_error(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{header.get('name')}' should "
                "start with 'x-' or 'X-'.",
            )
    return None


def _lower_body(body: dict) -> dict:
    return {
        "contentType": (body.get("contentType") or "text").lower(),
        "content": body.get("content", ""),
    }


def _header(record: dict, name: str) -> str | None:
    for header in record.get("internetMessageHeaders", []):
        if header["name"].lower() == name.lower():
            return header["value"]
    return None


def _recipients(record: dict) -> list[dict]:
    return [
        *record.get("toRecipients", []),
        *record.get("ccRecipients", []),
        *record.get("bccRecipients", []),
    ]


def _address(value) -> dict:
    name, address = value if isinstance(value, tuple) else ("", value)
    return {"emailAddress": {"name": name or address, "address": address}}


def _render(value: dict) -> str:
    email = value["emailAddress"]
    name = email.get("name")
    return f'"{name}" <{email["address"]}>' if name else email["address"]


def _file_attachment(name: str, content_type: str, content: bytes, inline) -> dict:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": _graph_id(),
        "name": name,
        "contentType": content_type,
        "size": len(content),
        "isInline": bool(inline),
        "contentId": None,
        "contentBytes": base64.b64encode(content).decode(),
    }


@pytest.fixture(scope="session")
def _fake_microsoft_server():
    server = FakeMicrosoft().start()
    yield server
    server.stop()


@pytest.fixture
def fake_microsoft(_fake_microsoft_server, monkeypatch):
    """Return the fake, reset for this test, with oauthlib allowed to use http."""
    # oauthlib refuses http:// token URLs; the fake only listens on loopback.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    _fake_microsoft_server.reset()
    return _fake_microsoft_server
