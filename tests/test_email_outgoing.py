"""Sending from a task through a real aiosmtpd: once, threaded, and recoverable."""

import io
import os
import threading
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import update

from posta import jobs
from posta.extensions import db
from posta.mail import smtp as smtp_adapter
from posta.models import Message, Role, Workspace, utcnow
from posta.services import outgoing, storage
from tests.email_support import (
    make_task,
    messages_on,
)


@pytest.fixture
def task():
    return make_task()


def compose(client, task, account, **fields):
    data = {
        "account_id": str(account.id),
        "to": "Mario Rossi <rossi@client.test>",
        "cc": "",
        "bcc": "",
        "subject": "",
        "body": "Here is the quote.",
    }
    data.update(fields)
    return client.post(
        f"/email/tasks/{task.id}/send?tab=email",
        data,
        content_type="multipart/form-data",
    )


def test_send_from_task_delivers_once_with_headers_and_attachment(
    member, client_for, account, task, smtp
):
    response = compose(
        client_for(member),
        task,
        account,
        cc="anna@client.test",
        bcc="boss@posta.test",
        attachments=[(io.BytesIO(b"%PDF-1.4 quote"), "quote.pdf", "application/pdf")],
    )
    assert response.status_code == 302

    [message] = messages_on(task)
    assert response.location.endswith(f"#message-{message.id}")
    assert message.status == "sent"
    assert message.sent_date is not None
    assert message.subject == f"[T-{task.id}] {task.name}"
    assert len(smtp.messages) == 1

    mail_from, rcpts, raw = smtp.messages[0]
    assert mail_from == account.email
    assert sorted(rcpts) == ["anna@client.test", "boss@posta.test", "rossi@client.test"]
    sent = message_from_bytes(raw, policy=policy.default)
    assert sent["Message-ID"] == message.message_id
    assert message.message_id.endswith("@posta.test>")
    assert sent["Subject"] == f"[T-{task.id}] Quote for Rossi"
    assert sent["Thread-Index"] == message.thread_index
    assert sent["To"] == "Mario Rossi <rossi@client.test>"
    assert sent["Cc"] == "anna@client.test"
    assert sent["Bcc"] is None
    assert b"boss@posta.test" not in raw
    assert "Here is the quote." in sent.get_body(("plain",)).get_content()
    [part] = list(sent.iter_attachments())
    assert part.get_filename() == "quote.pdf"
    assert part.get_content() == b"%PDF-1.4 quote"

    [stored] = message.attachments
    with open(storage.path_for(stored.storage_key), "rb") as f:
        assert f.read() == b"%PDF-1.4 quote"
    page = client_for(member).get(f"/tasks/{task.id}")
    assert b"Here is the quote." in page.data
    assert b"badge-sent" in page.data


def test_second_send_replies_to_the_first(member, account, task, smtp):
    first = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "One", []
    )
    second = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Two", []
    )
    assert second.in_reply_to == first.message_id
    assert second.references == first.message_id
    raw = smtp.messages[1][2]
    sent = message_from_bytes(raw, policy=policy.default)
    assert sent["In-Reply-To"] == first.message_id
    assert sent["References"] == first.message_id


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"to": ""}, b"Add at least one recipient"),
        ({"to": "rossi@client.test, not an address"}, b"is not a valid email address"),
        ({"body": "", "to": "rossi@client.test"}, b"Write a message or attach a file"),
    ],
)
def test_invalid_send_is_refused_and_keeps_the_draft(
    member, client_for, account, task, smtp, fields, text
):
    client = client_for(member)
    response = compose(client, task, account, subject="Draft kept", **fields)
    assert response.status_code == 302
    assert response.location.endswith(f"/tasks/{task.id}?tab=email#composer")
    page = client.get(response.location)
    assert text in page.data
    assert b'value="Draft kept"' in page.data
    assert messages_on(task) == []
    assert smtp.messages == []


def test_only_the_connecting_person_may_send_from_an_account(
    make_user, client_for, account, task, smtp
):
    client = client_for(make_user(Role.ADMIN))
    response = compose(client, task, account)
    assert response.status_code == 302
    assert b"You may not send from that account" in client.get(response.location).data
    assert messages_on(task) == []


def test_attachments_over_the_limit_store_nothing(
    app, member, client_for, account, task, smtp
):
    app.config["POSTA_MAX_UPLOAD_MB"] = 1
    big = io.BytesIO(b"x" * (1024 * 1024 + 1))
    client = client_for(member)
    response = compose(
        client, task, account, attachments=[(big, "big.bin", "text/plain")]
    )
    assert b"at most 1 MB" in client.get(response.location).data
    assert messages_on(task) == []
    folder = app.config["POSTA_ATTACHMENTS_DIR"]
    assert [files for _, _, files in os.walk(folder) if files] == []


def test_smtp_down_fails_with_reason_and_retry_sends_exactly_once(
    member, client_for, account, task, smtp
):
    smtp.stop()
    compose(client_for(member), task, account)
    [message] = messages_on(task)
    assert message.status == "failed"
    assert "could not be reached" in message.error
    page = client_for(member).get(f"/tasks/{task.id}")
    assert b"could not be reached" in page.data
    assert f"/email/messages/{message.id}/retry".encode() in page.data

    smtp.start()
    client = client_for(member)
    first = client.post(f"/email/messages/{message.id}/retry")
    second = client.post(f"/email/messages/{message.id}/retry")
    assert first.status_code == second.status_code == 302
    assert len(smtp.messages) == 1
    [message] = messages_on(task)
    assert message.status == "sent"
    assert message.attempts == 2
    assert b"already queued, sending or sent" in client.get(f"/tasks/{task.id}").data


def test_rejected_message_fails_with_the_server_reason(member, account, task, smtp):
    smtp.reject_next(554, "5.7.1 Message refused by policy")
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Hi", []
    )
    db.session.refresh(message)
    assert message.status == "failed"
    assert "554" in message.error and "refused by policy" in message.error


def test_connection_lost_after_data_says_it_may_have_been_delivered(
    member, account, task, smtp
):
    smtp.drop_after_data()
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Hi", []
    )
    db.session.refresh(message)
    assert message.status == "failed"
    assert "may have been delivered" in message.error


def test_two_workers_on_one_message_send_it_once(
    app, member, account, task, smtp, monkeypatch
):
    # Queue without a nudge so both workers race for the same row.
    monkeypatch.setattr(outgoing, "_nudge", lambda message_id: None)
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Hi", []
    )
    start = threading.Barrier(2)

    def worker():
        with app.app_context():
            start.wait()
            jobs.send_message(message.id)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(smtp.messages) == 1
    db.session.refresh(message)
    assert (message.status, message.attempts) == ("sent", 1)


def test_sweep_fails_stuck_sends_and_renudges_lost_ones(
    member, account, task, smtp, monkeypatch
):
    monkeypatch.setattr(outgoing, "_nudge", lambda message_id: None)
    stuck = outgoing.queue_send(
        member, task, account.id, "a@client.test", "", "", "", "stuck", []
    )
    lost = outgoing.queue_send(
        member, task, account.id, "b@client.test", "", "", "", "lost", []
    )
    long_ago = utcnow() - timedelta(hours=1)
    db.session.execute(
        update(Message)
        .where(Message.id == stuck.id)
        .values(status="sending", claimed_at=long_ago)
    )
    db.session.execute(
        update(Message).where(Message.id == lost.id).values(created_at=long_ago)
    )
    db.session.commit()

    monkeypatch.undo()
    jobs.sweep_outgoing()
    db.session.refresh(stuck)
    db.session.refresh(lost)
    assert stuck.status == "failed"
    assert "Check the Sent folder before retrying" in stuck.error
    assert lost.status == "sent"
    # The interrupted one is never re-sent blindly.
    assert [rcpts for _, rcpts, _ in smtp.messages] == [["b@client.test"]]


def test_composer_lists_senders_or_offers_to_connect(
    make_user, member, client_for, account, task
):
    page = client_for(member).get(f"/tasks/{task.id}?tab=email").data.decode()
    assert 'id="email-form"' in page
    assert f'<option value="{account.id}" selected>' in page
    assert 'value="add-new"' in page
    assert f'data-add-url="/email/connect?task={task.id}"' in page
    assert f'value="{task.name}"' in page

    # Free allows one account; Business leaves room for the other member's.
    Workspace.get().plan = "business"
    db.session.commit()
    other = client_for(make_user(Role.MEMBER)).get(f"/tasks/{task.id}?tab=email")
    assert b'id="connect-email"' in other.data
    assert b'id="email-form"' not in other.data
    assert f'href="/email/connect?task={task.id}"'.encode() in other.data


def test_add_new_in_the_from_list_goes_to_connect_without_javascript(
    member, client_for, account, task, smtp
):
    response = compose(client_for(member), task, account, account_id="add-new")
    assert response.status_code == 302
    assert response.location.endswith(f"/email/connect?task={task.id}")
    assert messages_on(task) == []


@pytest.fixture
def logins(monkeypatch):
    """Count the SMTP connections opened (each one logs in)."""
    opened = []
    real_open = smtp_adapter._open

    def counting_open(settings):
        opened.append(settings.username)
        return real_open(settings)

    monkeypatch.setattr(smtp_adapter, "_open", counting_open)
    return opened


def queue_unnudged(member, task, account, monkeypatch, count):
    """Queue `count` messages whose nudges are lost, so one job finds them all."""
    monkeypatch.setattr(outgoing, "_nudge", lambda message_id: None)
    queued = [
        outgoing.queue_send(
            member, task, account.id, f"r{n}@client.test", "", "", "", f"Note {n}", []
        )
        for n in range(count)
    ]
    return queued


def test_one_job_drains_the_queue_over_one_connection_each_once(
    member, account, task, smtp, logins, monkeypatch
):
    used_before = Workspace.get().uses_used
    queued = queue_unnudged(member, task, account, monkeypatch, 3)
    assert Workspace.get().uses_used == used_before + 3

    jobs.send_message(queued[0].id)
    # The other nudges arrive late and find nothing left to send.
    for message in queued:
        jobs.send_message(message.id)

    assert logins == [account.username]
    assert sorted(rcpts for _, rcpts, _ in smtp.messages) == [
        [f"r{n}@client.test"] for n in range(3)
    ]
    assert [(m.status, m.attempts) for m in messages_on(task)] == [("sent", 1)] * 3
    db.session.expire_all()
    assert Workspace.get().uses_used == used_before + 3


def test_a_connection_dropped_between_messages_is_reopened_once(
    member, account, task, smtp, logins, monkeypatch
):
    queued = queue_unnudged(member, task, account, monkeypatch, 2)
    real_send = smtp_adapter.SmtpConnection.send

    def send_then_arm(connection, *args):
        real_send(connection, *args)
        # The server closes the session before the next MAIL FROM.
        smtp.reject_next(421, "4.4.2 Idle too long, closing", stage="MAIL")

    monkeypatch.setattr(smtp_adapter.SmtpConnection, "send", send_then_arm)
    jobs.send_message(queued[0].id)

    assert len(logins) == 2
    assert [rcpts for _, rcpts, _ in smtp.messages] == [
        ["r0@client.test"],
        ["r1@client.test"],
    ]
    assert [m.status for m in messages_on(task)] == ["sent", "sent"]


def test_an_ambiguous_send_in_a_drain_fails_it_and_the_rest_still_go(
    member, account, task, smtp, logins, monkeypatch
):
    queued = queue_unnudged(member, task, account, monkeypatch, 2)
    smtp.drop_after_data()
    jobs.send_message(queued[0].id)

    first, second = messages_on(task)
    assert first.status == "failed" and "may have been delivered" in first.error
    assert second.status == "sent"
    # Never retried on the new connection: only the second went out there.
    assert [rcpts for _, rcpts, _ in smtp.messages] == [
        ["r0@client.test"],
        ["r1@client.test"],
    ]
    assert len(logins) == 2
