"""How a received email shows: sandboxed body, inline images, remote images, files."""

import re
from pathlib import Path

import pytest

from posta import jobs
from posta.extensions import db
from posta.models import Attachment, Role
from posta.services import outgoing
from tests.email_support import connect, make_mailbox, make_task, messages_on

CORPUS = Path(__file__).parent / "mail"


@pytest.fixture
def imported(member, dovecot, smtp):
    """Import corpus cases as replies to a task's email; return them by name."""
    mailbox = make_mailbox(dovecot, smtp)
    account = connect(member, mailbox)
    task = make_task()
    sent = outgoing.queue_send(
        member, task, account.id, "ann@example.test", "", "", "", "Hello", []
    )
    names = ("attach-cid-with-disposition", "attach-remote-images", "body-html-only")
    for name in names:
        raw = (CORPUS / f"{name}.eml").read_bytes()
        newline = b"\r\n" if b"\r\n" in raw[:500] else b"\n"
        header = b"References: " + sent.message_id.encode() + newline
        mailbox.dovecot.deliver(mailbox.address, header + raw)
    jobs.sync_account(account.id)
    received = [m for m in messages_on(task) if m.direction == "in"]
    assert len(received) == len(names)
    by_subject_order = dict(
        zip(names, sorted(received, key=lambda m: m.uid), strict=True)
    )
    return task, by_subject_order


def inline_urls(body: str) -> list[str]:
    return re.findall(r'src="(/email/attachments/\d+/inline\?t=[^"]+)"', body)


def test_body_is_sandboxed_without_referrer(client_for, member, imported):
    _, messages = imported
    message = messages["body-html-only"]
    response = client_for(member).get(f"/email/messages/{message.id}/body")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "img-src 'self' data:;" in csp
    assert "sandbox allow-popups allow-popups-to-escape-sandbox" in csp
    assert "script-src" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_cid_images_point_at_inline_urls_that_work_without_the_cookie(
    app, client_for, member, imported
):
    task, messages = imported
    message = messages["attach-cid-with-disposition"]
    client = client_for(member)
    body = client.get(f"/email/messages/{message.id}/body").data.decode()
    [url] = inline_urls(body)
    assert 'alt="logo"' in body
    assert "cid:" not in body

    # The sandboxed frame sends no session cookie: the signed link is enough.
    anonymous = client_for()
    image = anonymous.get(url)
    assert image.status_code == 200
    assert image.mimetype == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in image.headers["Content-Security-Policy"]
    assert "attachment" not in image.headers.get("Content-Disposition", "")
    # A link made for one image opens no other.
    number, token = re.search(r"/(\d+)/inline\?t=(.+)$", url).groups()
    other = f"/email/attachments/{int(number) + 1}/inline?t={token}"
    assert anonymous.get(other).status_code == 403
    unsigned = anonymous.get(f"/email/attachments/{number}/inline")
    assert unsigned.status_code == 302
    assert "/login" in unsigned.location
    assert anonymous.get(f"/email/attachments/{number}/inline?t=x").status_code == 403

    page = client.get(f"/tasks/{task.id}").data.decode()
    item = page.split(f'id="message-{message.id}"')[1].split("</li>")[0]
    # Inline images are not listed as attachments.
    assert "email-attachments" not in item


def test_inline_images_only_for_raster_types(client_for, member, imported):
    _, messages = imported
    item = messages["attach-cid-with-disposition"].attachments[0]
    item.content_type = "image/svg+xml"
    db.session.commit()
    response = client_for(member).get(f"/email/attachments/{item.id}/inline")
    assert response.status_code == 404


def test_inline_images_refuse_guests_and_answer_404_when_the_app_is_off(
    make_user, client_for, member, imported, email_on
):
    _, messages = imported
    message = messages["attach-cid-with-disposition"]
    [url] = inline_urls(
        client_for(member).get(f"/email/messages/{message.id}/body").data.decode()
    )
    guest = client_for(make_user(Role.GUEST))
    assert guest.get(url.split("?")[0]).status_code == 403
    member.role = Role.GUEST
    db.session.commit()
    assert client_for().get(url).status_code == 403
    email_on.email_enabled = False
    db.session.commit()
    assert client_for().get(url).status_code == 404


def test_remote_images_are_blocked_until_asked(client_for, member, imported):
    task, messages = imported
    message = messages["attach-remote-images"]
    client = client_for(member)
    page = client.get(f"/tasks/{task.id}").data.decode()
    link = f'href="/email/messages/{message.id}/body?images=1"'
    assert link in page
    assert f'target="email-body-{message.id}"' in page
    assert page.count("Show images") == 1

    blocked = client.get(f"/email/messages/{message.id}/body")
    assert ' src="https://' not in blocked.data.decode()
    assert "data-remote-src" in blocked.data.decode()
    assert "https:" not in blocked.headers["Content-Security-Policy"]

    shown = client.get(f"/email/messages/{message.id}/body?images=1")
    assert ' src="https://' in shown.data.decode()
    assert (
        "img-src 'self' data: https: http:;" in shown.headers["Content-Security-Policy"]
    )
    assert shown.headers["Referrer-Policy"] == "no-referrer"


def test_links_open_in_a_new_tab_without_referrer(client_for, member, imported):
    _, messages = imported
    for message in messages.values():
        body = client_for(member).get(f"/email/messages/{message.id}/body").data
        for tag in re.findall(rb"<a\b[^>]*href=[^>]*>", body):
            assert b'target="_blank"' in tag
            assert b"noreferrer" in tag


def test_downloads_are_attachments_for_people_who_see_the_task(
    make_user, client_for, member, imported
):
    _, messages = imported
    item = messages["attach-cid-with-disposition"].attachments[0]
    response = client_for(member).get(f"/email/attachments/{item.id}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (
        client_for(make_user(Role.GUEST))
        .get(f"/email/attachments/{item.id}")
        .status_code
        == 403
    )
    item.message.task_id = None
    db.session.commit()
    assert client_for(member).get(f"/email/attachments/{item.id}").status_code == 404
    assert db.session.get(Attachment, item.id) is not None
