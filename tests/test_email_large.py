"""Large replies from a real Dovecot: attachments stream to disk, nothing is left."""

import base64
import hashlib
import os
import time
from email.utils import format_datetime, make_msgid

import pytest

from posta import jobs
from posta.extensions import db
from posta.models import Attachment, EmailAccount, MailFolder, Message, utcnow
from posta.services import outgoing, storage
from tests.email_support import make_task, messages_on, reply_to

MB = 1024 * 1024
CHUNK = 57 * 1024  # a multiple of 57 bytes encodes to whole 76-character lines
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def sent(member, account):
    """A task with one email sent from it."""
    task = make_task()
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Big files", []
    )
    db.session.refresh(message)
    assert message.status == "sent"
    return task, message


@pytest.fixture
def adopted(monkeypatch):
    """Record the spool files moved into storage."""
    calls = []
    adopt = storage.adopt_file
    monkeypatch.setattr(
        storage, "adopt_file", lambda path: calls.append(path) or adopt(path)
    )
    return calls


def large_reply(parent_id: str | None, files, text="The files are attached.") -> bytes:
    """Build a reply with base64 attachments, [(filename, content type, data)]."""
    head = [
        "From: Mario Rossi <rossi@client.test>",
        "To: member@posta.test",
        "Subject: Re: Big files",
        f"Date: {format_datetime(utcnow())}",
        f"Message-ID: {make_msgid(domain='client.test')}",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
    ]
    if parent_id:
        head += [f"In-Reply-To: {parent_id}", f"References: {parent_id}"]
    out = ["\r\n".join(head).encode() + b"\r\n\r\n"]
    out.append(b"--b\r\nContent-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n")
    for filename, content_type, data in files:
        out.append(
            f"--b\r\nContent-Type: {content_type}\r\n"
            f'Content-Disposition: attachment; filename="{filename}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
        )
        out += [
            base64.encodebytes(data[at : at + CHUNK]).replace(b"\n", b"\r\n")
            for at in range(0, len(data), CHUNK)
        ]
    out.append(b"--b--\r\n")
    return b"".join(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha256(attachment: Attachment) -> str:
    digest = hashlib.sha256()
    with open(storage.path_for(attachment.storage_key), "rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(app) -> list[str]:
    """Every file in the attachments folder, spool included, relative to it."""
    root = app.config["POSTA_ATTACHMENTS_DIR"]
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    )


def test_30_mb_attachment_is_streamed_to_storage(app, mailbox, account, sent, adopted):
    task, original = sent
    data = os.urandom(30 * MB)
    mailbox.dovecot.deliver(
        mailbox.address,
        large_reply(original.message_id, [("drawings.pdf", "application/pdf", data)]),
    )

    jobs.sync_account(account.id)

    _, reply = messages_on(task)
    assert reply.direction == "in"
    assert reply.text_body.strip() == "The files are attached."
    [attachment] = reply.attachments
    assert (attachment.filename, attachment.content_type, attachment.size) == (
        "drawings.pdf",
        "application/pdf",
        30 * MB,
    )
    assert stored_sha256(attachment) == sha256(data)
    # Moved in from the spool by a rename, not written from bytes.
    assert len(adopted) == 1
    assert os.path.dirname(adopted[0]) == storage.spool_dir()
    assert files_under(app) == [attachment.storage_key]
    db.session.refresh(account)
    assert account.last_error is None
    assert account.last_sync_result == "1 new message"


def test_failure_while_storing_leaves_no_files_and_the_next_sync_imports(
    app, mailbox, account, sent, adopted, monkeypatch
):
    task, original = sent
    big, small = os.urandom(30 * MB), os.urandom(2 * MB)
    mailbox.dovecot.deliver(
        mailbox.address,
        large_reply(
            original.message_id,
            [
                ("big.bin", "application/octet-stream", big),
                ("signed.png", "image/png", PNG),
                ("small.bin", "application/octet-stream", small),
            ],
        ),
    )
    adopt = storage.adopt_file

    def full_disk(path):
        if adopted:  # one spooled file is in storage already
            adopted.append(path)
            raise OSError(28, "No space left on device")
        return adopt(path)

    monkeypatch.setattr(storage, "adopt_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        jobs.sync_account(account.id)

    assert len(adopted) == 2
    assert len(messages_on(task)) == 1
    assert db.session.scalar(db.select(db.func.count(Attachment.id))) == 0
    assert db.session.scalar(db.select(db.func.count(MailFolder.id))) == 0
    assert files_under(app) == []
    assert db.session.get(EmailAccount, account.id).sync_lease_until is None

    monkeypatch.setattr(storage, "adopt_file", adopt)
    jobs.sync_account(account.id)

    _, reply = messages_on(task)
    by_name = {a.filename: a for a in reply.attachments}
    assert sorted(by_name) == ["big.bin", "signed.png", "small.bin"]
    assert stored_sha256(by_name["big.bin"]) == sha256(big)
    assert stored_sha256(by_name["small.bin"]) == sha256(small)
    assert stored_sha256(by_name["signed.png"]) == sha256(PNG)
    assert files_under(app) == sorted(a.storage_key for a in reply.attachments)


def test_large_and_small_mail_in_one_pass_leave_nothing_in_the_spool(
    app, mailbox, account, sent, adopted
):
    task, original = sent
    first, second = os.urandom(2 * MB), os.urandom(3 * MB)
    for raw in (
        reply_to(original.message_id, text="Small one first."),
        large_reply(
            original.message_id,
            [("first.bin", "application/octet-stream", first)],
            text="Large one.",
        ),
        # Large, but threads into no task: parsed, spooled, then dropped.
        large_reply(None, [("news.bin", "application/octet-stream", second)]),
        reply_to(original.message_id, text="Small one last."),
    ):
        mailbox.dovecot.deliver(mailbox.address, raw)

    jobs.sync_account(account.id)

    texts = [m.text_body.strip() for m in messages_on(task)[1:]]
    assert texts == ["Small one first.", "Large one.", "Small one last."]
    [attachment] = messages_on(task)[2].attachments
    assert stored_sha256(attachment) == sha256(first)
    assert files_under(app) == [attachment.storage_key]

    # A forgotten cursor re-reads the folder: the duplicates are spooled again,
    # skipped by their dedupe keys, and their spool files removed.
    db.session.execute(db.delete(MailFolder))
    db.session.commit()
    jobs.sync_account(account.id)
    assert len(messages_on(task)) == 4
    assert len(adopted) == 1
    assert files_under(app) == [attachment.storage_key]
    received = db.select(db.func.count(Message.id)).where(Message.direction == "in")
    assert db.session.scalar(received) == 3


def test_stale_spool_files_are_swept(app, account):
    spool = storage.spool_dir()
    stale, fresh = os.path.join(spool, "posta-old.part"), os.path.join(spool, "new")
    for path in (stale, fresh):
        with open(path, "wb") as f:
            f.write(b"x")
    old = time.time() - storage.SPOOL_MAX_AGE - 60
    os.utime(stale, (old, old))

    jobs.sync_account(account.id)

    assert sorted(os.listdir(spool)) == ["new"]
