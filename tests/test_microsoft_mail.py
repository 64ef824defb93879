"""Mail through Microsoft Graph: tokens in jobs, delta sync, sending, contacts."""

import io
import json

import pytest
from flask import current_app
from werkzeug.datastructures import FileStorage

from posta import jobs
from posta.extensions import db
from posta.models import AccountStatus, Contact, MailFolder, Message, Role
from posta.services import contacts, graph_sync, outgoing
from tests.email_support import make_task, messages_on
from tests.microsoft_support import (
    app_config,  # noqa: F401
    graph_account,
)

ADDRESS = "ada@contoso.test"
CLIENT = "rossi@client.test"


@pytest.fixture
def member(make_user, email_on):
    return make_user(Role.MEMBER, name="Mia Member")


@pytest.fixture
def account(member, fake_microsoft):
    return graph_account(member, fake_microsoft, ADDRESS)


@pytest.fixture
def task(email_on):
    return make_task()


def _token(account) -> dict:
    db.session.refresh(account)
    return json.loads(current_app.extensions["posta_secrets"].decrypt(account.secret))


def _send(member, task, account, body="Here is the quote.", files=()):
    attachments = [
        FileStorage(io.BytesIO(data), filename=name, content_type="application/pdf")
        for name, data in files
    ]
    message = outgoing.queue_send(
        member, task, account.id, CLIENT, "", "", "", body, attachments
    )
    db.session.refresh(message)
    return message


def _sync(account):
    jobs.sync_account(account.id)
    db.session.expire_all()


def test_send_small_mail_once_via_sendmail(member, task, account, fake_microsoft):
    message = _send(member, task, account, files=[("quote.pdf", b"%PDF small")])
    assert message.status == "sent"
    [sent] = fake_microsoft.sent
    assert sent.via == "sendMail" and sent.headers["Message-ID"] == message.message_id
    assert sent.attachments[0]["content"] == b"%PDF small"
    assert [
        m["internetMessageId"] for m in fake_microsoft.folder(ADDRESS, "sentitems")
    ] == [message.message_id]
    # A second nudge finds the row already claimed: nothing goes out twice.
    outgoing.deliver(message.id)
    assert len(fake_microsoft.sent) == 1


def test_send_large_attachment_through_an_upload_session(
    member, task, account, fake_microsoft
):
    big = bytes(range(256)) * (14 * 1024)  # 3.5 MB
    message = _send(member, task, account, files=[("plans.pdf", big)])
    assert message.status == "sent", message.error
    [sent] = fake_microsoft.sent
    assert sent.via == "draft" and sent.attachments[0]["content"] == big
    assert fake_microsoft.count("/upload/", "PUT") == 2
    assert message.remote_id and message.conversation_id
    outgoing.deliver(message.id)
    assert len(fake_microsoft.sent) == 1


def test_reply_threads_by_in_reply_to_then_by_conversation(
    member, task, account, fake_microsoft
):
    first = _send(member, task, account)
    fake_microsoft.deliver(
        ADDRESS,
        subject="Re: Quote",
        sender=("Mario Rossi", CLIENT),
        body_html="<p>Fine <script>alert(1)</script>thanks</p>",
        in_reply_to=first.message_id,
        attachments=[("signed.pdf", "application/pdf", b"%PDF signed")],
    )
    fake_microsoft.deliver(ADDRESS, subject="Newsletter", sender="news@example.test")
    _sync(account)
    stream = messages_on(task)
    assert [m.direction for m in stream] == ["out", "in"]
    reply = stream[1]
    assert reply.from_addr == CLIENT and "script" not in reply.html_body
    assert "Fine" in reply.text_body and reply.remote_id and reply.conversation_id
    assert reply.attachments[0].filename == "signed.pdf"
    assert db.session.scalar(db.select(db.func.count(Message.id))) == 2

    # Answering from the task drafts a Graph reply, which records the conversation.
    answer = _send(member, task, account, body="Great, sending the contract.")
    assert answer.status == "sent" and fake_microsoft.sent[-1].via == "draft"
    assert fake_microsoft.sent[-1].headers["In-Reply-To"] == reply.message_id
    assert answer.conversation_id == reply.conversation_id

    # A message in that conversation without any reference headers still threads.
    fake_microsoft.deliver(
        ADDRESS,
        subject="Contract signed",
        sender=CLIENT,
        body_text="Signed.",
        conversation_id=answer.conversation_id,
    )
    _sync(account)
    last = messages_on(task)[-1]
    assert (last.direction, last.text_body) == ("in", "Signed.")
    assert last.in_reply_to is None


def test_lost_delta_state_restarts_without_duplicates(
    member, task, account, fake_microsoft
):
    first = _send(member, task, account)
    for n in range(3):
        fake_microsoft.deliver(
            ADDRESS, sender=CLIENT, body_text=f"old {n}", in_reply_to=first.message_id
        )
    _sync(account)
    assert len(messages_on(task)) == 4
    fake_microsoft.expire_delta_tokens()
    fake_microsoft.deliver(
        ADDRESS, sender=CLIENT, body_text="new", in_reply_to=first.message_id
    )
    _sync(account)
    texts = [m.text_body for m in messages_on(task)[1:]]
    assert sorted(texts) == ["new", "old 0", "old 1", "old 2"]
    statuses = [r.status for r in fake_microsoft.requests if "delta" in r.path]
    assert 410 in statuses
    folder = db.session.scalars(db.select(MailFolder)).one()
    assert folder.delta_link and folder.next_link is None


def test_throttled_pass_resumes_from_the_stored_next_link(
    member, task, account, fake_microsoft
):
    first = _send(member, task, account)
    for n in range(150):
        fake_microsoft.deliver(
            ADDRESS, sender=CLIENT, body_text=f"r{n}", in_reply_to=first.message_id
        )
    # One request per window: the second page is refused for two minutes.
    fake_microsoft.limits(budget=1, retry_after=120)
    _sync(account)
    assert len(messages_on(task)) == 1 + graph_sync.PAGE_SIZE
    assert "throttled, will resume" in account.last_sync_result
    folder = db.session.scalars(db.select(MailFolder)).one()
    assert folder.next_link and folder.delta_link is None

    fake_microsoft.limits()
    before = len(fake_microsoft.requests)
    _sync(account)
    resumed = [r for r in fake_microsoft.requests[before:] if "delta" in r.path]
    assert "$skiptoken=" in resumed[0].path
    assert len(messages_on(task)) == 151
    folder = db.session.scalars(db.select(MailFolder)).one()
    assert folder.delta_link and folder.next_link is None
    assert "throttled" not in account.last_sync_result


def test_rotated_refresh_tokens_are_persisted(member, task, account, fake_microsoft):
    original = _token(account)
    for _ in range(2):
        # Each expiry forces a renewal, which kills the refresh token used.
        fake_microsoft.expire_access_tokens()
        _sync(account)
        assert account.status == AccountStatus.ACTIVE and not account.last_error
    rotated = _token(account)
    assert rotated["refresh_token"] != original["refresh_token"]
    assert rotated["access_token"] != original["access_token"]
    assert rotated["refresh_token"].encode() not in account.secret


def test_revoked_sign_in_needs_reconnect_and_others_keep_syncing(
    app, make_user, client_for, owner, member, task, account, fake_microsoft, email_on
):
    email_on.plan = "business"  # two accounts
    db.session.commit()
    other = graph_account(member, fake_microsoft, "bob@contoso.test", "Bob")
    sent = _send(member, task, other)
    fake_microsoft.deliver(
        "bob@contoso.test", sender=CLIENT, body_text="hi", in_reply_to=sent.message_id
    )
    fake_microsoft.revoke_refresh_tokens(ADDRESS)
    fake_microsoft.expire_access_tokens()

    result = app.test_cli_runner().invoke(args=["email", "sync"])
    assert "queued sync for 2 account(s)" in result.output
    db.session.expire_all()
    assert account.status == AccountStatus.NEEDS_RECONNECT
    assert "Reconnect" in account.last_error
    assert other.status == AccountStatus.ACTIVE
    assert [m.text_body for m in messages_on(task) if m.direction == "in"] == ["hi"]

    banner = f'id="reconnect-{account.id}"'
    admin = make_user(Role.ADMIN)
    colleague = make_user(Role.MEMBER)
    for person, shown in ((member, True), (owner, True), (admin, True)):
        assert (banner in client_for(person).get("/").get_data(as_text=True)) is shown
    assert banner not in client_for(colleague).get("/").get_data(as_text=True)
    page = client_for(member).get("/").get_data(as_text=True)
    assert f"/email/microsoft/?account={account.id}" in page

    # Its sync stops trying; the other account's goes on.
    result = app.test_cli_runner().invoke(args=["email", "sync"])
    assert "queued sync for 1 account(s)" in result.output


def test_reconnect_restores_the_account(
    client_for, member, task, account, fake_microsoft
):
    from tests.microsoft_support import local, query, start

    fake_microsoft.revoke_refresh_tokens(ADDRESS)
    fake_microsoft.expire_access_tokens()
    _sync(account)
    assert account.status == AccountStatus.NEEDS_RECONNECT
    client = client_for(member)
    url = start(client, account=account.id)
    assert query(url)["login_hint"] == ADDRESS
    callback = client.get(local(fake_microsoft.consent(url)))
    assert callback.status_code == 302
    db.session.expire_all()
    assert account.status == AccountStatus.ACTIVE and account.last_error is None
    _sync(account)
    assert account.status == AccountStatus.ACTIVE


def test_contacts_import_is_capped_and_deduplicated(
    client_for, member, account, fake_microsoft
):
    for n in range(130):
        emails = [f"person{n}@client.test"]
        if n % 10 == 0:
            emails.append(f"PERSON{n}@client.test")  # same address, other case
        fake_microsoft.add_contact(ADDRESS, f"Person {n}", *emails)
    db.session.add(Contact(address="person1@client.test", name="Known"))
    db.session.commit()

    client = client_for(member)
    response = client.post(f"/email/microsoft/accounts/{account.id}/contacts")
    assert response.status_code == 302
    text = client.get("/email/settings").get_data(as_text=True)
    assert "99 contacts imported from ada@contoso.test (at most 100 per account)" in (
        text
    )
    assert db.session.scalar(db.select(db.func.count(Contact.id))) == 100
    assert contacts.import_from(member, account) == 0
    assert db.session.scalar(db.select(db.func.count(Contact.id))) == 100


def test_composer_suggests_contacts(client_for, member, task, account):
    db.session.add(Contact(address="mario@client.test", name="Mario Rossi"))
    db.session.commit()
    page = client_for(member).get(f"/tasks/{task.id}?tab=email")
    text = page.get_data(as_text=True)
    assert 'list="posta-contacts"' in text
    assert '<option value="Mario Rossi &lt;mario@client.test&gt;"' in text


def test_graph_request_counts_for_a_big_sync_and_an_idle_poll(
    member, task, account, fake_microsoft
):
    first = _send(member, task, account)
    for n in range(1000):
        fake_microsoft.deliver(
            ADDRESS, sender=CLIENT, body_text=f"m{n}", in_reply_to=first.message_id
        )
    before = len(fake_microsoft.requests)
    _sync(account)
    full = len(fake_microsoft.requests) - before
    assert len(messages_on(task)) == 1001
    before = len(fake_microsoft.requests)
    _sync(account)
    idle = len(fake_microsoft.requests) - before
    print(f"\nGraph requests: sync of 1,000 new messages = {full}, idle poll = {idle}")
    assert full == -(-1000 // graph_sync.PAGE_SIZE)
    assert idle == 1
