"""Signatures and email templates: plan, permissions, sanitizing and filling."""

from datetime import date
from email import message_from_bytes, policy

import pytest

from posta.extensions import db
from posta.models import EmailTemplate, Role, Signature, Workspace
from posta.services import templates
from tests.email_support import connect, make_mailbox, make_task, messages_on


@pytest.fixture
def member(make_user, email_on):
    email_on.plan = "business"
    db.session.commit()
    return make_user(Role.MEMBER, name="Mara Member")


@pytest.fixture
def account(member, dovecot, smtp):
    return connect(member, make_mailbox(dovecot, smtp))


@pytest.fixture
def task(member):
    task = make_task("Quote for Rossi")
    task.due_date = date(2030, 5, 17)
    task.assignees = [member]
    db.session.commit()
    return task


def add_signature(client, account, name, html, default=False):
    data = {"name": name, "html": html}
    if default:
        data["default"] = "on"
    return client.post(f"/email/accounts/{account.id}/signatures", data)


def test_signatures_are_sanitized_and_one_is_the_default(member, account, client_for):
    client = client_for(member)
    add_signature(client, account, "Work", "<b>Mara</b><script>alert(1)</script>")
    add_signature(client, account, "Short", "<i>M.</i>", default=True)
    first, second = db.session.scalars(db.select(Signature).order_by(Signature.id))
    assert first.html == "<b>Mara</b>"
    assert first.text == "Mara"
    db.session.refresh(first)
    assert (first.is_default, second.is_default) == (False, True)
    client.post(f"/email/signatures/{first.id}/default")
    db.session.refresh(first), db.session.refresh(second)
    assert (first.is_default, second.is_default) == (True, False)
    page = client.get(f"/email/accounts/{account.id}/settings")
    assert b"alert(1)" not in page.data


def test_the_signature_goes_below_the_body_in_text_and_html(
    member, account, client_for, task, smtp
):
    client = client_for(member)
    add_signature(client, account, "Work", "<b>Mara</b> &middot; Acme")
    signature = db.session.scalars(db.select(Signature)).one()
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert f'<option value="{signature.id}"'.encode() in page.data
    assert b" selected>Work" in page.data
    client.post(
        f"/email/tasks/{task.id}/send",
        {
            "account_id": str(account.id),
            "to": "rossi@client.test",
            "body": "Here is <the> quote.",
            "signature_id": str(signature.id),
        },
    )
    [message] = messages_on(task)
    assert message.status == "sent"
    mail = message_from_bytes(smtp.messages[-1][2], policy=policy.default)
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert text.replace("\r\n", "\n").startswith("Here is <the> quote.\n\n-- \nMara")
    assert "Here is &lt;the&gt; quote." in html
    assert html.index("quote.") < html.index("<b>Mara</b>")


def test_a_signature_of_another_account_is_refused(
    member, account, client_for, task, dovecot, smtp
):
    other = connect(member, make_mailbox(dovecot, smtp, "other"))
    add_signature(client_for(member), other, "Other", "Other sign")
    signature = db.session.scalars(db.select(Signature)).one()
    client_for(member).post(
        f"/email/tasks/{task.id}/send",
        {
            "account_id": str(account.id),
            "to": "rossi@client.test",
            "body": "Hi",
            "signature_id": str(signature.id),
        },
    )
    assert messages_on(task) == []


def test_below_business_signatures_and_templates_are_hidden_and_explained(
    member, account, client_for, task
):
    add_signature(client_for(member), account, "Work", "Mara")
    client_for(member).post(
        "/email/templates", {"name": "Hi", "subject": "Hi", "body": "Hello"}
    )
    Workspace.get().plan = "unlimited"
    db.session.commit()
    client = client_for(member)
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert b'name="signature_id"' not in page.data
    assert b'id="template-picker"' not in page.data
    page = client.get(f"/tasks/{task.id}?tab=email&template=1")
    assert b'value="Hi"' not in page.data
    settings = client.get(f"/email/accounts/{account.id}/settings")
    assert b"Signatures and email templates come with Business" in settings.data
    listing = client.get("/email/templates")
    assert b"Signatures and email templates come with Business" in listing.data
    assert client.get(f"/email/tasks/{task.id}/templates/1").status_code == 403


def test_an_unknown_placeholder_is_refused_with_the_valid_ones(
    member, account, client_for
):
    response = client_for(member).post(
        "/email/templates",
        {"name": "Quote", "subject": "About {task_nme}", "body": "{task_name}"},
    )
    assert response.status_code == 400
    assert b"Unknown placeholder: {task_nme}." in response.data
    assert b"{task_due_date}" in response.data
    assert b'value="About {task_nme}"' in response.data
    assert db.session.scalars(db.select(EmailTemplate)).all() == []
    assert templates.unknown_placeholders("{a} {task_id} {a} {}") == ["a", ""]


def test_a_template_is_filled_from_the_task(member, account, client_for, task):
    client = client_for(member)
    client.post(
        "/email/templates",
        {
            "name": "Quote",
            "subject": "{task_id}: {task_name}",
            "body": (
                "Status {task_status}, due {task_due_date}, for {task_assignees} "
                "in {task_list}. {viewer_name}"
            ),
        },
    )
    template = db.session.scalars(db.select(EmailTemplate)).one()
    filled = client.get(f"/email/tasks/{task.id}/templates/{template.id}").json
    assert filled == {
        "subject": f"T-{task.id}: Quote for Rossi",
        "body": ("Status Open, due 2030-05-17, for Mara Member in Sales. Mara Member"),
    }
    # Without JavaScript, "Use template" reloads the composer filled in.
    page = client.get(f"/tasks/{task.id}?tab=email&template={template.id}")
    assert f'value="T-{task.id}: Quote for Rossi"'.encode() in page.data
    assert b"Status Open, due 2030-05-17" in page.data


def test_template_creation_follows_the_accounts_choice(
    member, account, make_user, client_for
):
    other = make_user(Role.MEMBER)
    data = {"name": "Hi", "subject": "Hi", "body": "Hello"}
    page = client_for(other).get("/email/templates")
    assert b"no account allows you yet" in page.data
    client_for(other).post("/email/templates", data)
    assert db.session.scalars(db.select(EmailTemplate)).all() == []
    account.template_policy = "everyone"
    db.session.commit()
    client_for(other).post("/email/templates", data)
    template = db.session.scalars(db.select(EmailTemplate)).one()
    client_for(other).post(
        f"/email/templates/{template.id}/edit",
        {"name": "Hello", "subject": "Hi {task_name}", "body": "Hello"},
    )
    db.session.refresh(template)
    assert (template.name, template.subject) == ("Hello", "Hi {task_name}")
    client_for(other).post(f"/email/templates/{template.id}/delete")
    assert db.session.scalars(db.select(EmailTemplate)).all() == []
