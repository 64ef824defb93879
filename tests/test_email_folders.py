"""Folder-level sync rules against a real Dovecot: UIDVALIDITY and vanished folders."""

import pytest
from markupsafe import escape

from posta import jobs
from posta.extensions import db
from posta.models import EmailAccount, MailFolder, Message
from posta.services import outgoing
from tests.email_support import connect, make_mailbox, make_task, messages_on, reply_to

FOLDER = "Replies"


@pytest.fixture
def app_config():
    return {"POSTA_SYNC_FOLDERS": ["INBOX", FOLDER]}


@pytest.fixture
def mailbox(dovecot, smtp):
    box = make_mailbox(dovecot, smtp)
    dovecot.create_folder(box.address, FOLDER)
    return box


@pytest.fixture
def sent(member, mailbox):
    account = connect(member, mailbox)
    task = make_task()
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Quote", []
    )
    db.session.refresh(message)
    return account, task, message


def received(task) -> list[str]:
    return sorted(m.message_id for m in messages_on(task) if m.direction == "in")


def test_changed_uidvalidity_rereads_without_duplicates_or_losses(mailbox, sent):
    account, task, message = sent
    first = reply_to(message.message_id, message_id="<first@client.test>")
    mailbox.dovecot.deliver(mailbox.address, first, folder=FOLDER)
    jobs.sync_account(account.id)
    folder = db.session.scalars(
        db.select(MailFolder).filter_by(account_id=account.id, name=FOLDER)
    ).one()
    old_validity = folder.uidvalidity

    # Recreating the folder gives it a new UIDVALIDITY and renumbers its mail.
    mailbox.dovecot.delete_folder(mailbox.address, FOLDER)
    mailbox.dovecot.create_folder(mailbox.address, FOLDER)
    second = reply_to(message.message_id, message_id="<second@client.test>")
    mailbox.dovecot.deliver(mailbox.address, first, folder=FOLDER)
    mailbox.dovecot.deliver(mailbox.address, second, folder=FOLDER)
    jobs.sync_account(account.id)

    db.session.expire_all()
    assert db.session.get(MailFolder, folder.id).uidvalidity != old_validity
    assert received(task) == ["<first@client.test>", "<second@client.test>"]


def test_vanished_folder_stops_only_that_folder_with_a_visible_error(
    mailbox, sent, member, client_for
):
    account, task, message = sent
    jobs.sync_account(account.id)
    mailbox.dovecot.delete_folder(mailbox.address, FOLDER)
    reply = reply_to(message.message_id, message_id="<inbox@client.test>")
    mailbox.dovecot.deliver(mailbox.address, reply)

    jobs.sync_account(account.id)

    db.session.expire_all()
    assert received(task) == ["<inbox@client.test>"]
    gone = db.session.scalars(
        db.select(MailFolder).filter_by(account_id=account.id, name=FOLDER)
    ).one()
    assert gone.last_error
    inbox = db.session.scalars(
        db.select(MailFolder).filter_by(account_id=account.id, name="INBOX")
    ).one()
    assert inbox.last_error is None
    assert db.session.get(EmailAccount, account.id).status == "active"
    page = client_for(member).get("/email/settings").get_data(as_text=True)
    assert str(escape(f"{FOLDER}: {gone.last_error}")) in page
    assert Message.query.filter_by(direction="in").count() == 1
