"""Plans and permissions as people meet them, in headless Chromium."""

import pytest

from posta.extensions import db
from posta.models import EmailTemplate, Message, Role, User, Workspace
from tests.email_support import connect, make_mailbox, make_task
from tests.fixtures.app import PASSWORD

pytestmark = pytest.mark.browser


def seed(live_server, plan="free", role=Role.OWNER):
    """Create the workspace, Email on, one person and a task; return their ids."""
    with live_server.app.app_context():
        db.session.add(Workspace(name="Acme", email_enabled=True, plan=plan))
        person = User(email=f"{role}@example.test", name="Olga", role=role)
        person.set_password(PASSWORD)
        db.session.add(person)
        db.session.commit()
        return person.id, make_task("Quote for Rossi").id


def log_in(page, live_server, email):
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def connect_account(live_server, user_id, dovecot, smtp, local="olga"):
    with live_server.app.app_context():
        mailbox = make_mailbox(dovecot, smtp, local)
        return connect(db.session.get(User, user_id), mailbox).id


def test_the_last_free_use_then_the_composer_refuses(live_server, page, dovecot, smtp):
    owner_id, task_id = seed(live_server)
    connect_account(live_server, owner_id, dovecot, smtp)
    with live_server.app.app_context():
        Workspace.get().uses_used = 99
        db.session.commit()
    log_in(page, live_server, "owner@example.test")
    page.goto(f"{live_server.url}/tasks/{task_id}?tab=email")
    assert page.locator("#uses-left").inner_text().startswith("1 of 100 uses left.")

    page.fill("#email-form input[name=to]", "rossi@client.test")
    page.fill("#email-form textarea[name=body]", "Here is the quote.")
    page.click("#email-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#uses-left").inner_text().startswith("0 of 100 uses left.")
    assert "Free Forever are used" in page.locator("#uses-refused").inner_text()

    page.fill("#email-form input[name=to]", "rossi@client.test")
    page.fill("#email-form textarea[name=body]", "One more.")
    page.click("#email-form button[type=submit]")
    page.wait_for_load_state()
    assert "Free Forever are used" in page.locator(".flash-error").inner_text()
    with live_server.app.app_context():
        assert db.session.scalars(db.select(Message.text_body)).all() == [
            "Here is the quote."
        ]


def test_the_account_limit_is_explained_where_accounts_are_added(
    live_server, page, dovecot, smtp
):
    owner_id, task_id = seed(live_server)
    connect_account(live_server, owner_id, dovecot, smtp)
    log_in(page, live_server, "owner@example.test")
    page.goto(f"{live_server.url}/tasks/{task_id}?tab=email")
    assert page.locator("#email-from option[value=add-new]").is_disabled()
    text = page.locator("#add-account-refused").inner_text()
    assert "Free Forever allows 1 connected email account" in text
    assert "move to Business, which allows 2" in text

    page.goto(live_server.url + "/settings")
    page.click("text=Email Integration")
    assert page.locator("#add-account").count() == 0
    assert "move to Business" in page.locator("#add-account-refused").inner_text()


def test_a_template_fills_the_composer_from_the_task(live_server, page, dovecot, smtp):
    owner_id, task_id = seed(live_server, plan="business")
    connect_account(live_server, owner_id, dovecot, smtp)
    with live_server.app.app_context():
        db.session.add(
            EmailTemplate(
                name="Quote",
                subject="{task_id}: {task_name}",
                body="Dear client, about {task_name}. {viewer_name}",
            )
        )
        db.session.commit()
    log_in(page, live_server, "owner@example.test")
    page.goto(f"{live_server.url}/tasks/{task_id}?tab=email")
    page.select_option("#email-template", label="Quote")
    page.click("#use-template")
    subject = page.locator("#email-form input[name=subject]")
    subject.wait_for()
    page.wait_for_function(
        "document.querySelector('#email-form input[name=subject]').value"
        ".startsWith('T-')"
    )
    assert subject.input_value() == f"T-{task_id}: Quote for Rossi"
    body = page.locator("#email-form textarea[name=body]").input_value()
    assert body == "Dear client, about Quote for Rossi. Olga"


def test_a_guest_sees_no_email(live_server, page):
    _, task_id = seed(live_server, role=Role.GUEST)
    log_in(page, live_server, "guest@example.test")
    page.goto(f"{live_server.url}/tasks/{task_id}?tab=email")
    assert page.locator("#tab-comment").is_visible()
    assert page.locator("#tab-email").count() == 0
    assert page.locator("#email-form").count() == 0
    response = page.goto(live_server.url + "/email/templates")
    assert response.status == 403
