"""`email watch` against a real Dovecot: one session, IDLE or polls, new mail shows."""

import threading
import time

import pytest

from posta.extensions import db
from posta.models import EmailAccount, utcnow
from posta.services import inbound
from posta.services.watch import Watcher
from tests.email_support import (
    messages_on,
    reply_to,
)

# Generous: a bound on a hang, not a latency figure (those are in bench).
ARRIVAL_TIMEOUT = 30


@pytest.fixture
def watching(app, imap_commands):
    """Start a watcher on a thread; stop it and wait for it after the test."""
    started = []

    def start(**options):
        watcher = Watcher(app, **options)
        thread = threading.Thread(target=watcher.run)
        thread.start()
        started.append((watcher, thread))
        return watcher

    yield start
    for watcher, thread in started:
        watcher.stop()
        thread.join(30)
        assert not thread.is_alive()


def wait_for_messages(task, count) -> list:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while time.monotonic() < deadline:
        messages = messages_on(task)
        db.session.commit()
        if len(messages) >= count:
            return messages
        time.sleep(0.1)
    raise AssertionError(f"{task.name}: fewer than {count} messages in time")


@pytest.mark.parametrize("use_idle", [True, False], ids=["idle", "poll"])
def test_deliveries_show_on_their_task_over_one_session(
    mailbox, sent, watching, imap_commands, use_idle
):
    task, original = sent
    watching(poll_seconds=0.2, use_idle=use_idle)
    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="First reply.")
    )
    wait_for_messages(task, 2)
    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="Second reply.")
    )
    messages = wait_for_messages(task, 3)

    assert [m.text_body.strip() for m in messages[1:]] == [
        "First reply.",
        "Second reply.",
    ]
    commands = imap_commands()
    assert commands.count("LOGIN") == 1
    assert ("IDLE" in commands) == use_idle


def test_a_held_lease_keeps_the_watcher_out_until_released(
    app, mailbox, account, sent, watching
):
    task, original = sent
    EmailAccount.acquire_sync_lease(account.id, utcnow().replace(year=2100))
    db.session.commit()
    watching(poll_seconds=0.2)
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    # A sync job meanwhile is skipped too: the lease is what both honour.
    assert inbound.sync_account(account.id) is None
    assert len(messages_on(task)) == 1

    db.session.execute(
        db.update(EmailAccount)
        .where(EmailAccount.id == account.id)
        .values(sync_lease_until=None)
    )
    db.session.commit()
    assert len(wait_for_messages(task, 2)) == 2
