"""posta.mail.graph against the local Microsoft fake."""

import logging
import secrets
import socket
import threading
import time
from dataclasses import replace

import pytest
import requests

from posta.mail import graph
from posta.mail.compose import OutgoingAttachment, OutgoingMail
from posta.mail.errors import (
    AmbiguousSendError,
    AuthError,
    PermanentSendError,
    ResyncNeeded,
    UnreachableError,
)

USER = "ada@contoso.test"
SCOPES = ("offline_access", "User.Read", "Mail.ReadWrite", "Mail.Send", "Contacts.Read")


class Recorder:
    """Collect rotated tokens and the waits the client asked for."""

    def __init__(self):
        self.tokens: list[dict] = []
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def settings(fake_microsoft):
    return graph.GraphSettings(
        graph_url=fake_microsoft.graph_url,
        token_url=fake_microsoft.token_url,
        client_id=fake_microsoft.client_id,
        client_secret=fake_microsoft.client_secret,
        scopes=SCOPES,
        max_retry_after=1.0,
    )


@pytest.fixture
def connect(fake_microsoft, settings, recorder):
    """Return a factory of clients for USER, created with a fresh grant."""
    fake_microsoft.add_user(USER, "Ada Lovelace")

    def make(token=None, client_settings=settings):
        return graph.GraphClient(
            client_settings,
            token or fake_microsoft.grant(USER, SCOPES),
            recorder.tokens.append,
            mailbox=f"{USER}-{secrets.token_hex(4)}",
            sleep=recorder.sleep,
        )

    return make


def _statuses(fake, part=""):
    return [r.status for r in fake.requests if part in r.path]


def _sync(client, store: dict, link=None, page_size=50):
    """Persist every page, then return the delta link (the caller's protocol)."""
    delta_link = None
    for page in graph.delta_inbox(client, link, page_size=page_size):
        for message in page.messages:
            store.setdefault(message.internet_message_id, message)
        delta_link = page.delta_link or delta_link
    return delta_link


def test_me_reads_work_and_personal_accounts(fake_microsoft, connect):
    user = graph.me(connect())
    assert user.address == USER and user.display_name == "Ada Lovelace"
    assert user.personal is False
    fake_microsoft.add_user("bob@outlook.test", "Bob", personal=True)
    token = fake_microsoft.grant("bob@outlook.test", SCOPES)
    bob = graph.me(connect(token))
    assert bob.address == "bob@outlook.test" and bob.personal is True


def test_delta_follows_next_links_and_parses_messages(fake_microsoft, connect):
    original = fake_microsoft.deliver(USER, subject="first")
    for n in range(119):
        fake_microsoft.deliver(
            USER,
            subject=f"m{n}",
            sender=("Bob", "bob@example.test"),
            cc=["carol@example.test"],
            body_html=f"<p>{n}</p>",
            in_reply_to="<root@posta.test>",
            references=["<root@posta.test>", "<mid@posta.test>"],
        )
    pages = list(graph.delta_inbox(connect(), page_size=50))
    assert [len(p.messages) for p in pages] == [50, 50, 20]
    assert [bool(p.next_link) for p in pages] == [True, True, False]
    assert [bool(p.delta_link) for p in pages] == [False, False, True]
    message = pages[-1].messages[-1]
    assert message.sender == graph.Recipient("Bob", "bob@example.test")
    assert message.cc == [graph.Recipient("carol@example.test", "carol@example.test")]
    assert message.body_type == "html" and message.body == "<p>118</p>"
    assert message.in_reply_to == "<root@posta.test>"
    assert message.references == ["<root@posta.test>", "<mid@posta.test>"]
    assert message.received_at is not None and message.internet_message_id
    assert pages[0].messages[0].id == original
    # Only the fields Posta keeps were asked for.
    first_request = next(r for r in fake_microsoft.requests if "delta" in r.path)
    assert "$select=id,internetMessageId,conversationId" in first_request.path


def test_thousand_messages_and_idle_poll_request_counts(fake_microsoft, connect):
    client = connect()
    for n in range(1000):
        fake_microsoft.deliver(USER, subject=f"bulk {n}", body_text="x" * 200)
    store: dict = {}
    link = _sync(client, store)
    full_sync = fake_microsoft.count("/messages/delta")
    _sync(client, store, link)
    idle = fake_microsoft.count("/messages/delta") - full_sync
    print(f"\nGraph requests: 1,000 new messages = {full_sync}, idle poll = {idle}")
    assert len(store) == 1000
    assert full_sync <= 25
    assert idle == 1


def test_resync_after_410_restarts_without_duplicates(fake_microsoft, connect):
    client = connect()
    for n in range(30):
        fake_microsoft.deliver(USER, subject=f"old {n}")
    store: dict = {}
    link = _sync(client, store)
    for n in range(5):
        fake_microsoft.deliver(USER, subject=f"new {n}")
    fake_microsoft.expire_delta_tokens()
    with pytest.raises(ResyncNeeded):
        _sync(client, store, link)
    link = _sync(client, store, None)
    assert len(store) == 35
    assert sorted(m.subject for m in store.values() if m.subject.startswith("new")) == [
        f"new {n}" for n in range(5)
    ]
    assert link and _sync(client, store, link) and len(store) == 35


def test_a_throttled_sync_resumes_from_the_saved_next_link(fake_microsoft, connect):
    client = connect()
    for n in range(120):
        fake_microsoft.deliver(USER, subject=f"m{n}")
    pages = graph.delta_inbox(client, page_size=50)
    page = next(pages)
    store = {m.internet_message_id: m for m in page.messages}
    saved_next = page.next_link
    # The second page is throttled for longer than the client waits inline.
    fake_microsoft.fail_next_graph(429, "ApplicationThrottled", 5, path="delta")
    with pytest.raises(graph.Throttled) as caught:
        next(pages)
    assert caught.value.retry_after == 5
    assert len(store) == 50 and saved_next
    before = fake_microsoft.count("/messages/delta")
    link = _sync(client, store, saved_next)
    assert len(store) == 120 and link
    assert fake_microsoft.count("/messages/delta") - before == 2


def test_429_and_503_are_retried_after_retry_after(
    fake_microsoft, connect, recorder, caplog
):
    client = connect()
    fake_microsoft.fail_next_graph(429, "TooManyRequests", 0.05, path="/me")
    fake_microsoft.fail_next_graph(503, "ServiceUnavailable", 0.1, path="/me")
    with caplog.at_level(logging.WARNING, logger="posta.mail.graph"):
        assert graph.me(client).address == USER
    assert recorder.sleeps == [0.05, 0.1]
    assert _statuses(fake_microsoft, "/v1.0/me") == [429, 503, 200]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "TooManyRequests" in retries[0].getMessage()


def test_throttling_gives_up_after_the_cap(fake_microsoft, connect, recorder):
    client = connect()
    fake_microsoft.fail_next_graph(429, "TooManyRequests", 30, path="/me")
    with pytest.raises(graph.Throttled) as caught:
        graph.me(client)
    assert caught.value.retry_after == 30 and recorder.sleeps == []
    fake_microsoft.fail_next_graph(503, "ServiceUnavailable", 0.01, times=5)
    with pytest.raises(graph.Throttled):
        graph.me(client)
    assert len(recorder.sleeps) == 4 and _statuses(fake_microsoft)[-5:] == [503] * 5


def test_parallel_fetches_keep_four_in_flight(fake_microsoft, connect):
    client = connect()
    ids = [fake_microsoft.deliver(USER, subject=f"m{n}") for n in range(16)]
    fake_microsoft.latency = 0.05
    fake_microsoft.limits(max_in_flight=4, retry_after=0.05)
    messages = graph.fetch_parallel(client, graph.get_message, ids, workers=12)
    assert [messages[i].subject for i in ids] == [f"m{n}" for n in range(16)]
    assert 429 not in _statuses(fake_microsoft)
    assert fake_microsoft.max_in_flight_seen[USER] <= 4


def test_token_renewed_before_expiry_and_rotation_persisted(
    fake_microsoft, connect, recorder, settings
):
    token = fake_microsoft.grant(USER, SCOPES)
    token["expires_at"] = time.time() + 60  # inside the refresh margin
    client = connect(token)
    assert graph.me(client).address == USER
    assert len(recorder.tokens) == 1
    rotated = recorder.tokens[0]
    assert rotated["refresh_token"] != token["refresh_token"]
    assert rotated["access_token"] == client.token["access_token"]
    assert [r.path.split("/")[-1] for r in fake_microsoft.requests] == [
        "token",
        "me?$select=id,displayName,mail,userPrincipalName",
    ]
    # The old refresh token is dead, so persisting the new one matters.
    reuse = requests.post(
        settings.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(settings.client_id, settings.client_secret),
        timeout=5,
    )
    assert reuse.json()["error"] == "invalid_grant"


def test_token_renewed_once_after_a_401(fake_microsoft, connect, recorder):
    client = connect()
    fake_microsoft.expire_access_tokens()
    assert graph.me(client).address == USER
    assert [r.status for r in fake_microsoft.requests] == [401, 200, 200]
    assert len(recorder.tokens) == 1
    fake_microsoft.expire_access_tokens()
    fake_microsoft.fail_next_graph(401, "InvalidAuthenticationToken", None)
    with pytest.raises(AuthError):
        graph.me(client)


@pytest.mark.parametrize(
    ("script", "error"),
    [(None, "invalid_grant"), (700082, "invalid_grant"), (50076, "interaction")],
)
def test_refused_renewal_is_an_auth_error(fake_microsoft, connect, script, error):
    client = connect()
    if script:
        fake_microsoft.fail_next_token(script)
    else:
        fake_microsoft.revoke_refresh_tokens(USER)
    fake_microsoft.expire_access_tokens()
    with pytest.raises(AuthError) as caught:
        graph.me(client)
    assert error in caught.value.detail and "reconnect" in caught.value.detail


def test_no_refresh_token_means_reconnect(fake_microsoft, connect):
    token = fake_microsoft.grant(USER, ("User.Read",))
    token["expires_at"] = time.time() - 1
    with pytest.raises(AuthError, match="offline access"):
        graph.me(connect(token))


def _mail(tmp_path, attachments=(), **fields) -> OutgoingMail:
    files = []
    for name, size in attachments:
        path = tmp_path / name
        path.write_bytes(secrets.token_bytes(size))
        files.append(OutgoingAttachment(name, "application/octet-stream", str(path)))
    values = {
        "from_addr": USER,
        "to": ["Bob <bob@example.test>"],
        "subject": "Quote",
        "text": "Hello Bob",
        "html": "<p>Hello Bob</p>",
        "message_id": f"<{secrets.token_hex(8)}@posta.test>",
        "attachments": files,
        "extra_headers": {"X-Posta-Task": "42", "Auto-Submitted": "auto-generated"},
    }
    return OutgoingMail(**(values | fields))


def test_small_mail_goes_out_in_one_send_mail(fake_microsoft, connect, tmp_path):
    mail = _mail(tmp_path, [("note.txt", 2000)])
    sent = graph.send_mail(connect(), mail)
    assert sent.internet_message_id == mail.message_id
    assert fake_microsoft.count("/v1.0/") == 1 and fake_microsoft.count("sendMail") == 1
    record = fake_microsoft.sent[0]
    assert record.via == "sendMail"
    assert record.headers["Message-ID"] == mail.message_id
    assert record.headers["X-Posta-Task"] == "42"
    assert "Auto-Submitted" not in record.headers  # Graph only takes x- headers
    assert record.headers["To"] == '"Bob" <bob@example.test>'
    assert record.attachments[0]["content"] == (tmp_path / "note.txt").read_bytes()
    assert record.message["body"]["contentType"] == "html"


def test_large_attachment_uses_draft_and_upload_session(
    fake_microsoft, connect, tmp_path
):
    mail = _mail(tmp_path, [("big.bin", 5 * 1024 * 1024), ("small.txt", 100)])
    sent = graph.send_mail(connect(), mail)
    record = fake_microsoft.sent[0]
    assert record.via == "draft"
    assert [a["name"] for a in record.attachments] == ["big.bin", "small.txt"]
    assert record.attachments[0]["content"] == (tmp_path / "big.bin").read_bytes()
    assert fake_microsoft.count("/upload/", "PUT") == 2  # 3 MiB + 2 MiB
    assert fake_microsoft.count("createUploadSession") == 1
    sent_items = fake_microsoft.folder(USER, "sentitems")
    assert [m["id"] for m in sent_items] == [sent.message_id]
    assert sent.conversation_id == sent_items[0]["conversationId"]
    assert sent.internet_message_id == mail.message_id


def test_reply_is_threaded_through_create_reply(fake_microsoft, connect, tmp_path):
    original = fake_microsoft.deliver(
        USER,
        subject="Question",
        sender="bob@example.test",
        internet_message_id="<q@example.test>",
        references=["<root@example.test>"],
    )
    conversation = fake_microsoft.folder(USER, "inbox")[0]["conversationId"]
    mail = _mail(tmp_path, subject="RE: Question", in_reply_to="<q@example.test>")
    sent = graph.send_mail(connect(), mail, reply_to_id=original)
    headers = fake_microsoft.sent[0].headers
    assert headers["In-Reply-To"] == "<q@example.test>"
    assert headers["References"] == "<root@example.test> <q@example.test>"
    assert sent.conversation_id == conversation


def test_refused_message_is_a_permanent_send_error(connect, tmp_path):
    with pytest.raises(PermanentSendError, match="ErrorInvalidRecipients"):
        graph.send_mail(connect(), _mail(tmp_path, to=[]))


def test_attachments_are_fetched_with_content(fake_microsoft, connect):
    data = secrets.token_bytes(3000)
    message_id = fake_microsoft.deliver(
        USER, subject="files", attachments=[("report.pdf", "application/pdf", data)]
    )
    attachments = graph.fetch_attachments(connect(), message_id)
    assert [(a.name, a.content_type, a.size) for a in attachments] == [
        ("report.pdf", "application/pdf", 3000)
    ]
    assert attachments[0].content == data


def test_a_deleted_message_is_gone(fake_microsoft, connect):
    message_id = fake_microsoft.deliver(USER, subject="soon gone")
    fake_microsoft.delete_message(USER, message_id)
    with pytest.raises(graph.MessageGone):
        graph.get_message(connect(), message_id)


def test_contacts_are_capped_and_paged(fake_microsoft, connect):
    for n in range(130):
        extra = [f"alt{n}@example.test"] if n % 10 == 0 else []
        fake_microsoft.add_contact(USER, f"Person {n}", f"p{n}@example.test", *extra)
    fake_microsoft.add_contact(USER, "Duplicate", "P0@example.test")
    contacts = graph.import_contacts(connect(), limit=100)
    assert len(contacts) == 100
    assert len({c.address.lower() for c in contacts}) == 100
    assert contacts[:2] == [
        graph.GraphContact("Person 0", "p0@example.test"),
        graph.GraphContact("Person 0", "alt0@example.test"),
    ]
    assert fake_microsoft.count("/me/contacts") == 2


def test_unreachable_graph_is_classified(settings, connect, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = replace(settings, graph_url=f"http://127.0.0.1:{port}/v1.0")
    with pytest.raises(UnreachableError):
        graph.me(connect(client_settings=closed))
    # Nothing left the machine, so the send is known not to have happened.
    with pytest.raises(UnreachableError):
        graph.send_mail(connect(client_settings=closed), _mail(tmp_path))


def test_a_send_cut_off_after_the_request_is_ambiguous(settings, connect, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    port = listener.getsockname()[1]
    cut = replace(settings, graph_url=f"http://127.0.0.1:{port}/v1.0")
    with pytest.raises(AmbiguousSendError):
        graph.send_mail(connect(client_settings=cut), _mail(tmp_path))
    thread.join()
    listener.close()


def test_tokens_never_reach_the_logs(
    fake_microsoft, connect, recorder, caplog, tmp_path
):
    token = fake_microsoft.grant(USER, SCOPES)
    token["expires_at"] = time.time() - 1
    client = connect(token)
    with caplog.at_level(logging.DEBUG):
        graph.send_mail(client, _mail(tmp_path, [("big.bin", 3_100_000)]))
    secrets_seen = [
        token["access_token"],
        token["refresh_token"],
        recorder.tokens[0]["access_token"],
        recorder.tokens[0]["refresh_token"],
        fake_microsoft.client_secret,
        "authtoken=",
    ]
    # The fake's own request log (werkzeug) is not the product's.
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")
    )
    assert fake_microsoft.count("/upload/", "PUT") == 1
    assert "Renewed the Microsoft access token" in ours
    assert [s for s in secrets_seen if s in ours] == []
