"""Received mail lands on the right task, says why, and can be moved or split."""

import base64
from pathlib import Path
from types import SimpleNamespace

import pytest

from posta import jobs
from posta.extensions import db
from posta.models import Message, Role, Task, TaskList
from posta.services import linking, outgoing
from tests.email_support import make_task, messages_on, reply_to

CORPUS = Path(__file__).parent / "mail"


def received(task) -> list[Message]:
    return [m for m in messages_on(task) if m.direction == "in"]


def tagged(subject: str, **kwargs) -> bytes:
    """Return a message with this subject and no threading headers."""
    raw = reply_to("", **kwargs)
    return raw.replace(b"Subject: Re: Quote", f"Subject: {subject}".encode())


def test_outgoing_subject_carries_the_task_tag_and_thread_index(sent, smtp):
    task, message = sent
    assert message.subject == f"[T-{task.id}] Quote for Rossi"
    assert len(base64.b64decode(message.thread_index)) == 22
    raw = smtp.messages[-1][2].decode()
    assert f"Subject: [T-{task.id}] Quote for Rossi" in raw
    assert f"Thread-Index: {message.thread_index}" in raw


def test_a_reply_extends_the_received_thread_index(member, account, mailbox, sent):
    task, original = sent
    raw = reply_to(original.message_id).replace(
        b"Subject:", b"Thread-Index: AQHaAAAAAAAAAAAAAAAAAAAAAAAAAA==\r\nSubject:"
    )
    mailbox.dovecot.deliver(mailbox.address, raw)
    jobs.sync_account(account.id)
    [reply] = received(task)
    assert reply.thread_index == "AQHaAAAAAAAAAAAAAAAAAAAAAAAAAA=="
    answer = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "Re: Quote", "Ok", []
    )
    assert answer.in_reply_to == reply.message_id
    extended = base64.b64decode(answer.thread_index)
    assert extended[:22] == base64.b64decode(reply.thread_index)
    assert len(extended) == 27


def test_a_reply_is_linked_by_its_headers(client_for, member, account, mailbox, sent):
    task, original = sent
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    jobs.sync_account(account.id)
    [reply] = received(task)
    assert reply.link_reason == "header"
    page = client_for(member).get(f"/tasks/{task.id}").data.decode()
    assert "Linked because it replies to an email on this task" in page


def test_a_reply_without_headers_is_linked_by_its_task_tag(
    client_for, member, account, mailbox, sent
):
    task, _ = sent
    other = make_task("Other")
    mailbox.dovecot.deliver(
        mailbox.address, tagged(f"Fwd: RE: [T-{task.id}] Quote", text="Forwarded")
    )
    mailbox.dovecot.deliver(
        mailbox.address, tagged(f"Re: [t-{other.id}] Other", text="Lower case")
    )
    mailbox.dovecot.deliver(mailbox.address, tagged("Re: [T-99999] Nobody"))
    mailbox.dovecot.deliver(mailbox.address, tagged("Re: Quote", text="No tag"))
    jobs.sync_account(account.id)

    [reply] = received(task)
    assert (reply.link_reason, reply.text_body.strip()) == ("task_tag", "Forwarded")
    [lower] = received(other)
    assert lower.link_reason == "task_tag"
    assert db.session.scalar(db.select(db.func.count(Message.id))) == 3
    page = client_for(member).get(f"/tasks/{task.id}").data.decode()
    assert f"Linked by the task reference [T-{task.id}] in its subject" in page


def test_graph_links_by_references_then_tag_then_conversation(account, sent):
    task, original = sent
    other = make_task("Other")
    original.conversation_id = "conv-1"
    db.session.commit()

    def graph_message(subject="Hello", in_reply_to=None, conversation_id=None):
        return SimpleNamespace(
            subject=subject,
            in_reply_to=in_reply_to,
            references=[],
            conversation_id=conversation_id,
        )

    by_header = linking.graph_link(
        account.id,
        graph_message(f"[T-{other.id}]", original.message_id, conversation_id="x"),
    )
    assert (by_header.task_id, by_header.reason) == (task.id, "header")
    by_tag = linking.graph_link(
        account.id, graph_message(f"Re: [T-{other.id}]", conversation_id="conv-1")
    )
    assert (by_tag.task_id, by_tag.reason) == (other.id, "task_tag")
    by_conversation = linking.graph_link(
        account.id, graph_message("Re: Quote", conversation_id="conv-1")
    )
    assert (by_conversation.task_id, by_conversation.reason) == (
        task.id,
        "conversation",
    )
    assert linking.graph_link(account.id, graph_message("Hi", None, "zzz")) is None


def test_a_bounce_marks_the_sent_email_failed_and_sends_nothing(
    client_for, member, account, mailbox, sent, smtp
):
    task, original = sent
    sent_before = len(smtp.messages)
    raw = (CORPUS / "bounce-dsn-returned-message.eml").read_bytes()
    mailbox.dovecot.deliver(
        mailbox.address,
        raw.replace(b"<out-42@posta.test>", original.message_id.encode()),
    )
    jobs.sync_account(account.id)

    db.session.refresh(original)
    assert original.status == "failed"
    assert "5.2.2" in original.error
    assert "Mailbox full" in original.error
    assert "full@example.test" in original.error
    [bounce] = received(task)
    assert (bounce.auto_kind, bounce.link_reason) == ("bounce", "header")
    jobs.sync_account(account.id)
    assert len(smtp.messages) == sent_before
    page = client_for(member).get(f"/tasks/{task.id}").data.decode()
    assert "Delivery failure" in page
    assert "Mailbox full" in page


def test_a_bounce_of_mail_we_never_sent_is_left_out(account, mailbox, sent):
    task, _ = sent
    raw = (CORPUS / "bounce-dsn-returned-message.eml").read_bytes()
    mailbox.dovecot.deliver(mailbox.address, raw)
    jobs.sync_account(account.id)
    assert received(task) == []


def test_an_auto_reply_is_marked_and_not_answered(
    client_for, member, account, mailbox, sent, smtp
):
    task, original = sent
    sent_before = len(smtp.messages)
    raw = reply_to(original.message_id, text="I am away until Monday.").replace(
        b"Subject: Re: Quote", b"Auto-Submitted: auto-replied\r\nSubject: Re: Quote"
    )
    mailbox.dovecot.deliver(mailbox.address, raw)
    jobs.sync_account(account.id)
    [reply] = received(task)
    assert reply.auto_kind == "auto_reply"
    assert len(smtp.messages) == sent_before
    page = client_for(member).get(f"/tasks/{task.id}").data.decode()
    assert "Automatic reply" in page


@pytest.fixture
def reply(account, mailbox, sent):
    task, original = sent
    mailbox.dovecot.deliver(
        mailbox.address,
        reply_to(original.message_id).replace(
            b"Subject: Re: Quote", f"Subject: RE: AW: [T-{task.id}] Quote".encode()
        ),
    )
    jobs.sync_account(account.id)
    [message] = received(task)
    return message


def test_move_to_another_task(client_for, member, reply):
    source = reply.task_id
    target = make_task("Invoice")
    client = client_for(member)
    page = client.get(f"/tasks/{source}").data.decode()
    assert f'action="/email/messages/{reply.id}/move"' in page
    assert f'<option value="T-{target.id}">Invoice</option>' in page

    response = client.post(f"/email/messages/{reply.id}/move", {"task": target.id})
    assert response.status_code == 302
    assert f"/tasks/{target.id}" in response.location
    db.session.refresh(reply)
    assert (reply.task_id, reply.link_reason) == (target.id, "moved")
    assert reply.linked_by_id == member.id
    page = client.get(f"/tasks/{target.id}").data.decode()
    assert "Moved here by Mara Member" in page
    assert f"#message-{reply.id}" not in client.get(f"/tasks/{source}").data.decode()


def test_move_by_task_number(client_for, member, reply):
    target = make_task("Invoice")
    response = client_for(member).post(
        f"/email/messages/{reply.id}/move", {"task": "", "task_ref": f"T-{target.id}"}
    )
    assert response.status_code == 302
    db.session.refresh(reply)
    assert reply.task_id == target.id


@pytest.mark.parametrize("target", ["", "T-99999", "banana"])
def test_move_refuses_bad_input_with_a_message(client_for, member, reply, target):
    source = reply.task_id
    client = client_for(member)
    response = client.post(f"/email/messages/{reply.id}/move", {"task_ref": target})
    assert response.status_code == 302
    assert f"/tasks/{source}" in response.location
    page = client.get(response.location).data.decode()
    assert "Choose a task, or enter a task number such as T-42." in page
    db.session.refresh(reply)
    assert reply.task_id == source


def test_move_to_the_same_task_is_explained(client_for, member, reply):
    client = client_for(member)
    response = client.post(f"/email/messages/{reply.id}/move", {"task": reply.task_id})
    page = client.get(response.location).data.decode()
    assert "The email is already on that task." in page


def test_sent_emails_cannot_be_moved(client_for, member, sent):
    task, original = sent
    other = make_task("Other")
    client = client_for(member)
    response = client.post(f"/email/messages/{original.id}/move", {"task": other.id})
    page = client.get(response.location).data.decode()
    assert "Only received emails can be moved." in page
    assert messages_on(other) == []


def test_split_into_a_new_task(client_for, member, reply):
    source = db.session.get(Task, reply.task_id)
    client = client_for(member)
    response = client.post(f"/email/messages/{reply.id}/split")
    assert response.status_code == 302
    db.session.refresh(reply)
    task = db.session.get(Task, reply.task_id)
    assert task.id != source.id
    assert (task.name, task.list_id, task.created_by_id) == (
        "Quote",
        source.list_id,
        member.id,
    )
    assert reply.link_reason == "split"
    assert response.location.endswith(f"/tasks/{task.id}?tab=email#message-{reply.id}")
    page = client.get(response.location).data.decode()
    assert "Split into this task by Mara Member" in page
    assert db.session.scalar(db.select(db.func.count(TaskList.id))) == 1


def test_guests_are_refused(make_user, client_for, reply):
    guest = client_for(make_user(Role.GUEST))
    assert (
        guest.post(f"/email/messages/{reply.id}/move", {"task": 1}).status_code == 403
    )
    assert guest.post(f"/email/messages/{reply.id}/split").status_code == 403


def test_everything_is_404_while_the_app_is_off(client_for, member, reply, email_on):
    email_on.email_enabled = False
    db.session.commit()
    client = client_for(member)
    assert (
        client.post(f"/email/messages/{reply.id}/move", {"task": 1}).status_code == 404
    )
    assert client.post(f"/email/messages/{reply.id}/split").status_code == 404


def test_unknown_messages_are_404(client_for, member, email_on):
    client = client_for(member)
    assert client.post("/email/messages/999/move", {"task": 1}).status_code == 404
    assert client.post("/email/messages/999/split").status_code == 404


def test_csrf_is_required(client_for, member, reply):
    source = reply.task_id
    client = client_for(member)
    target = make_task("Invoice")
    response = client.post(
        f"/email/messages/{reply.id}/move", {"task": target.id}, csrf=False
    )
    assert response.status_code == 400
    assert (
        client.post(f"/email/messages/{reply.id}/split", csrf=False).status_code == 400
    )
    db.session.refresh(reply)
    assert reply.task_id == source
    assert db.session.scalar(db.select(db.func.count(Task.id))) == 2
