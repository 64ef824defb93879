"""Folder sync against a real Dovecot: incremental, idle, UIDVALIDITY, batches."""

import time

import pytest

from posta.mail.errors import FolderGone
from posta.mail.imap import ImapSession
from posta.mail.sync import FolderState, sync_folder
from tests.mail_samples import raw_message


def want_all(headers):
    return {h.uid for h in headers}


def new_state(folder="INBOX"):
    return FolderState(name=folder, uidvalidity=None, last_uid=0, uidnext=None)


def run(settings, state, wanted=want_all, batch_size=500):
    """Run one sync pass; return its batches and the cursor the caller would keep."""
    with ImapSession(settings) as session:
        batches = list(sync_folder(session, state, wanted, batch_size))
    return batches, (batches[-1].state if batches else state)


@pytest.fixture
def user(dovecot):
    return dovecot.add_user("sync", "pw")


def deliver_numbered(dovecot, user, numbers, folder="INBOX"):
    for n in numbers:
        dovecot.deliver(user, raw_message(message_id=f"<n{n}@example.test>"), folder)


def message_ids(batches):
    return [m.message_id for b in batches for _, m in b.messages]


def test_incremental_second_pass_reads_only_new(dovecot, user):
    settings = dovecot.settings(user)
    deliver_numbered(dovecot, user, range(3))
    batches, state = run(settings, new_state())
    assert message_ids(batches) == ["<n0@example.test>", "<n1@example.test>",
                                    "<n2@example.test>"]  # fmt: skip
    assert (state.last_uid, state.uidnext) == (3, 4)
    deliver_numbered(dovecot, user, [3, 4])
    batches, state = run(settings, state)
    assert [h.uid for b in batches for h in b.headers] == [4, 5]
    assert message_ids(batches) == ["<n3@example.test>", "<n4@example.test>"]
    assert (state.last_uid, state.uidnext) == (5, 6)


def test_idle_pass_is_one_examine(dovecot, user, caplog, imap_commands):
    settings = dovecot.settings(user)
    deliver_numbered(dovecot, user, range(2))
    _, state = run(settings, new_state())
    with ImapSession(settings) as session:
        caplog.clear()
        batches = list(sync_folder(session, state, want_all))
        assert imap_commands() == ["EXAMINE"]
    assert batches == []


def test_empty_folder_first_pass_records_cursor(dovecot, user):
    batches, state = run(dovecot.settings(user), new_state())
    assert [(b.headers, b.messages) for b in batches] == [([], [])]
    assert state.uidvalidity is not None and state.uidnext == 1


def test_uidvalidity_change_rereads_folder(dovecot, user):
    settings = dovecot.settings(user)
    dovecot.create_folder(user, "Projects")
    deliver_numbered(dovecot, user, [1, 2], "Projects")
    _, old = run(settings, new_state("Projects"))
    dovecot.delete_folder(user, "Projects")
    dovecot.create_folder(user, "Projects")
    deliver_numbered(dovecot, user, [1, 2, 3], "Projects")
    batches, state = run(settings, old)
    assert state.uidvalidity != old.uidvalidity
    # Starts over from uid 0: the caller's dedupe keys absorb n1 and n2.
    assert [h.uid for b in batches for h in b.headers] == [1, 2, 3]
    assert message_ids(batches) == [f"<n{n}@example.test>" for n in (1, 2, 3)]


def test_only_wanted_bodies_fetched(dovecot, user, caplog):
    settings = dovecot.settings(user)
    dovecot.deliver(user, raw_message(message_id="<noise@example.test>"))
    dovecot.deliver(
        user,
        raw_message(message_id="<r1@example.test>", in_reply_to="<task-9@posta.test>"),
    )
    dovecot.deliver(user, raw_message(message_id="<noise2@example.test>"))

    def replies_only(headers):
        return {h.uid for h in headers if h.in_reply_to == "<task-9@posta.test>"}

    caplog.set_level("DEBUG", logger="imapclient")
    batches, _ = run(settings, new_state(), replies_only)
    assert len(batches[0].headers) == 3
    assert [(uid, m.message_id) for uid, m in batches[0].messages] == [
        (2, "<r1@example.test>")
    ]
    body_fetches = [
        r.getMessage() for r in caplog.records if "BODY.PEEK[]" in r.getMessage()
    ]
    assert len(body_fetches) == 1 and "UID FETCH 2 (BODY.PEEK[])" in body_fetches[0]


def test_malformed_message_does_not_stop_the_rest(dovecot, user):
    deliver_numbered(dovecot, user, [1])
    dovecot.deliver(
        user,
        b"Subject: =?utf-8?q?broken\r\nContent-Type: multipart/mixed; boundary=z\r\n"
        b"Message-ID: <<<bad\r\n\r\n--z\r\nContent-Type: text/plain; charset=nope\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n%%%\xff\xfe not base64\r\n",
    )
    deliver_numbered(dovecot, user, [3])
    batches, state = run(dovecot.settings(user), new_state())
    messages = dict(batches[0].messages)
    assert sorted(messages) == [1, 2, 3]
    assert messages[2].defects
    assert messages[2].dedupe_key.startswith("sha256:")
    assert messages[3].message_id == "<n3@example.test>"
    assert messages[3].text == "Hello there.\n"
    assert state.last_uid == 3


def test_deleted_folder_is_folder_gone(dovecot, user):
    dovecot.create_folder(user, "Old")
    _, state = run(dovecot.settings(user), new_state("Old"))
    dovecot.delete_folder(user, "Old")
    with pytest.raises(FolderGone):
        run(dovecot.settings(user), state)


def test_batches_carry_resumable_cursors(dovecot, user):
    settings = dovecot.settings(user)
    deliver_numbered(dovecot, user, range(5))
    batches, _ = run(settings, new_state(), batch_size=2)
    assert [[h.uid for h in b.headers] for b in batches] == [[1, 2], [3, 4], [5]]
    assert [(b.state.last_uid, b.state.uidnext) for b in batches] == [
        (2, None),
        (4, None),
        (5, 6),
    ]
    # A crash after committing the first batch resumes right behind it.
    resumed, state = run(settings, batches[0].state)
    assert [h.uid for b in resumed for h in b.headers] == [3, 4, 5]
    assert (state.last_uid, state.uidnext) == (5, 6)


def test_thousand_messages(dovecot, user, caplog, imap_commands):
    filler = "Status update line for the task, with some detail.\n" * 400
    for n in range(1000):
        dovecot.deliver(
            user, raw_message(message_id=f"<k{n}@example.test>", body=filler)
        )
    with ImapSession(dovecot.settings(user)) as session:
        caplog.clear()
        start = time.perf_counter()
        batches = list(sync_folder(session, new_state(), want_all))
        elapsed = time.perf_counter() - start
        commands = imap_commands()
    print(f"\n1,000-message sync (~20 KB each) from Dovecot: {elapsed:.2f} s")
    assert sum(len(b.messages) for b in batches) == 1000
    assert batches[-1].state.last_uid == 1000
    # Per 500-UID batch: one header FETCH and body FETCHes of 200, 200 and 100.
    assert commands.count("UID FETCH") == 8
    assert commands.count("EXAMINE") == commands.count("UID SEARCH") == 1
