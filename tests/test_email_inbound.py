"""Replies delivered into a real Dovecot come back onto their task."""

from datetime import timedelta

from flask import current_app

from posta import jobs
from posta.extensions import db
from posta.models import EmailAccount, MailFolder, Message, utcnow
from posta.services import outgoing, storage
from tests.email_support import (
    make_task,
    messages_on,
    reply_to,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
HTML = (
    '<p onclick="steal()">Thanks, <b>the quote</b> is fine.</p>'
    '<script>alert("x")</script><img src="https://tracker.test/pixel.gif">'
)


def test_reply_lands_on_the_task_with_text_html_and_attachments(
    member, client_for, mailbox, account, sent
):
    task, original = sent
    mailbox.dovecot.deliver(
        mailbox.address,
        reply_to(
            original.message_id,
            html=HTML,
            attachments=[("signed.png", "image/png", PNG)],
        ),
    )
    jobs.sync_account(account.id)

    _, reply = messages_on(task)
    assert reply.direction == "in"
    assert reply.from_addr == "rossi@client.test"
    assert reply.from_name == "Mario Rossi"
    assert reply.in_reply_to == original.message_id
    assert "Thanks, the quote is fine." in reply.text_body
    assert "<b>the quote</b>" in reply.html_body
    assert "script" not in reply.html_body
    assert "onclick" not in reply.html_body
    [attachment] = reply.attachments
    assert (attachment.filename, attachment.content_type) == ("signed.png", "image/png")
    with open(storage.path_for(attachment.storage_key), "rb") as f:
        assert f.read() == PNG

    db.session.refresh(account)
    assert account.last_sync_result == "1 new message"
    assert account.last_error is None
    assert account.sync_lease_until is None

    client = client_for(member)
    page = client.get(f"/tasks/{task.id}").data.decode()
    assert "Thanks, the quote is fine." in page
    assert f'src="/email/messages/{reply.id}/body"' in page
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    assert f'href="/email/attachments/{attachment.id}"' in page

    body = client.get(f"/email/messages/{reply.id}/body")
    assert body.status_code == 200
    assert body.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    )
    assert body.mimetype == "text/html"
    assert b"<b>the quote</b>" in body.data

    download = client.get(f"/email/attachments/{attachment.id}")
    assert download.status_code == 200
    assert download.data == PNG
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "signed.png" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"


def test_second_sync_adds_nothing_and_new_mail_arrives_later(mailbox, account, sent):
    task, original = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    jobs.sync_account(account.id)
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 2

    # A forgotten cursor re-reads the folder; dedupe keeps it from storing twice.
    db.session.execute(db.delete(MailFolder))
    db.session.commit()
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 2

    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="One more thing.")
    )
    jobs.sync_account(account.id)
    assert [m.text_body.strip() for m in messages_on(task)][-1] == "One more thing."


def test_malformed_message_does_not_block_a_later_reply(mailbox, account, sent):
    task, original = sent
    broken = (
        b"From: =?utf-8?q?broken\r\nTo: <<<>>>\r\nSubject: =?bogus?x?zz?=\r\n"
        b"In-Reply-To: " + original.message_id.encode() + b"\r\n"
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n\xff\xfe garbage\r\n"
    )
    mailbox.dovecot.deliver(mailbox.address, broken)
    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="The good reply.")
    )
    jobs.sync_account(account.id)
    texts = [m.text_body for m in messages_on(task)]
    assert any("The good reply." in text for text in texts)
    db.session.refresh(account)
    assert account.last_error is None


def test_unrelated_mail_is_not_stored(mailbox, account, sent):
    task, _ = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(None, text="Newsletter"))
    mailbox.dovecot.deliver(mailbox.address, reply_to("<unknown@elsewhere.test>"))
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 1
    assert db.session.scalar(db.select(db.func.count()).select_from(MailFolder)) == 1
    db.session.refresh(account)
    assert account.last_sync_result == "0 new messages"


def test_a_held_lease_skips_the_sync(mailbox, account, sent):
    task, original = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    account.sync_lease_until = utcnow() + timedelta(minutes=5)
    db.session.commit()
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 1

    # An expired lease (a crashed sync) no longer blocks.
    account.sync_lease_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 2


def test_refused_login_is_recorded_and_shown(member, client_for, account):
    box = current_app.extensions["posta_secrets"]
    account.secret = box.encrypt("no-longer-the-password")
    db.session.commit()
    jobs.sync_account(account.id)
    account = db.session.get(EmailAccount, account.id)
    assert account.last_error == "Wrong email or password."
    assert account.last_sync_result == "Failed after 0 new messages"
    assert account.status == "active"
    assert account.sync_lease_until is None
    page = client_for(member).get("/email/settings")
    assert b"Wrong email or password." in page.data


def test_sync_now_button_imports_replies(member, client_for, mailbox, account, sent):
    task, original = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    client = client_for(member)
    response = client.post(f"/email/accounts/{account.id}/sync")
    assert response.status_code == 302
    assert len(messages_on(task)) == 2
    assert b"1 new message" in client.get("/email/settings").data


def test_mail_of_a_deleted_account_stays_on_its_task(
    member, client_for, mailbox, account, sent
):
    task, original = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    jobs.sync_account(account.id)
    client_for(member).post(f"/email/accounts/{account.id}/delete")
    assert db.session.get(EmailAccount, account.id) is None
    assert [m.account_id for m in messages_on(task)] == [None, None]


def test_one_lookup_per_batch_puts_each_reply_on_its_task(
    member, mailbox, account, sent, monkeypatch
):
    task, original = sent
    other = make_task("Second quote")
    second = outgoing.queue_send(
        member, other, account.id, "bianchi@client.test", "", "", "", "Second", []
    )
    first_reply = "<first-reply@client.test>"
    for raw in (
        reply_to(second.message_id, text="For the second task."),
        reply_to(original.message_id, text="For the first.", message_id=first_reply),
        # Points only at a reply that is in the same batch, not yet stored.
        reply_to(first_reply, text="Following up on my reply."),
        reply_to("<unknown@elsewhere.test>", text="Not ours."),
    ):
        mailbox.dovecot.deliver(mailbox.address, raw)
    lookups = []
    lookup = Message.tasks_by_message_id
    monkeypatch.setattr(
        Message, "tasks_by_message_id", lambda ids: lookups.append(ids) or lookup(ids)
    )

    jobs.sync_account(account.id)

    assert len(lookups) == 1
    texts = [m.text_body.strip() for m in messages_on(task)[1:]]
    assert texts == ["For the first.", "Following up on my reply."]
    assert [m.text_body.strip() for m in messages_on(other)[1:]] == [
        "For the second task."
    ]
    received = db.select(db.func.count(Message.id)).where(Message.direction == "in")
    assert db.session.scalar(received) == 3
