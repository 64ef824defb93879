"""Connecting a mailbox against real Dovecot and aiosmtpd servers."""

import socket

import pytest
from flask import current_app
from sqlalchemy import func, select

from posta.extensions import db
from posta.models import EmailAccount, Role
from posta.services import accounts
from tests.email_support import connect, make_task
from tests.fixtures.servers import free_port


def account_count():
    return db.session.scalar(select(func.count(EmailAccount.id)))


def test_connect_stores_encrypted_password_and_returns_to_task(
    member, client_for, mailbox
):
    task = make_task()
    client = client_for(member)
    response = client.post(f"/email/connect/exchange?task={task.id}", mailbox.form())
    assert response.status_code == 302
    assert response.location.endswith(f"/tasks/{task.id}?tab=email#composer")

    account = db.session.scalars(select(EmailAccount)).one()
    assert account.email == mailbox.address
    assert account.connected_by_id == member.id
    assert account.send_policy == "only_me"
    assert (account.imap_port, account.smtp_port) == (
        mailbox.dovecot.port,
        mailbox.smtp.port,
    )
    raw = db.session.execute(db.text("SELECT secret FROM email_account")).scalar_one()
    assert mailbox.password.encode() not in raw
    box = current_app.extensions["posta_secrets"]
    assert box.decrypt(account.secret) == mailbox.password

    page = client.get(f"/tasks/{task.id}?tab=email")
    assert mailbox.address.encode() in page.data
    assert mailbox.password.encode() not in page.data
    settings = client.get("/email/settings")
    assert mailbox.address.encode() in settings.data
    assert mailbox.password.encode() not in settings.data


def test_wrong_password_is_explained_and_nothing_is_stored(member, client_for, mailbox):
    form = mailbox.form(password="not-the-password")
    url = f"/email/connect/exchange?task={make_task().id}"
    response = client_for(member).post(url, form)
    assert response.status_code == 200
    assert b"Wrong email or password" in response.data
    # The form never echoes a password back.
    assert b"not-the-password" not in response.data
    assert account_count() == 0


def test_unreachable_server_is_explained_and_nothing_is_stored(
    member, client_for, mailbox
):
    closed_port = free_port()
    form = mailbox.form(imap_port=str(closed_port))
    url = f"/email/connect/exchange?task={make_task().id}"
    response = client_for(member).post(url, form)
    assert b"could not be reached" in response.data
    assert account_count() == 0


def test_smtp_unreachable_after_imap_ok_stores_nothing(member, mailbox):
    with pytest.raises(accounts.AccountError) as failure:
        accounts.connect_imap_account(member, mailbox.form(smtp_port=str(free_port())))
    assert "Outgoing mail (SMTP)" in str(failure.value.message)
    assert "could not be reached" in str(failure.value.message)
    assert account_count() == 0


def test_tls_mismatch_is_explained(member, mailbox):
    # Implicit TLS against Dovecot's plain-text listener.
    with pytest.raises(accounts.AccountError) as failure:
        accounts.connect_imap_account(member, mailbox.form(imap_security="ssl"))
    assert "secure connection failed" in str(failure.value.message)
    assert account_count() == 0


def test_silent_server_times_out(app, member, mailbox):
    app.config["POSTA_MAIL_TIMEOUT"] = 0.5
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(accounts.AccountError) as failure:
            accounts.connect_imap_account(member, mailbox.form(imap_port=str(port)))
    assert "did not answer in time" in str(failure.value.message)
    assert account_count() == 0


def test_basic_auth_disabled_at_microsoft_points_to_sign_in_with_microsoft(
    member, mailbox
):
    mailbox.smtp.reject_next(
        535,
        "5.7.139 Authentication unsuccessful, basic authentication is disabled.",
        stage="AUTH",
    )
    # A Microsoft address, but every server is the loopback test server.
    form = mailbox.form(email="mara@outlook.com", username=mailbox.address)
    with pytest.raises(accounts.AccountError) as failure:
        accounts.connect_imap_account(member, form)
    message = str(failure.value.message)
    assert "basic authentication is disabled" in message
    assert "Sign in with Microsoft" in message
    assert account_count() == 0


def test_verified_with_the_ca_bundle_over_tls(app, member, mailbox):
    app.config["POSTA_CA_BUNDLE"] = mailbox.dovecot.cert_path
    form = mailbox.form(imap_port=str(mailbox.dovecot.tls_port), imap_security="ssl")
    account = accounts.connect_imap_account(member, form)
    assert account.imap_security == "ssl"


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("email", "not-an-address", "not valid"),
        ("password", "", "Enter the password"),
        ("imap_host", "", "Enter the server name"),
        ("imap_port", "70000", "from 1 to 65535"),
        ("smtp_port", "zero", "from 1 to 65535"),
        ("smtp_security", "maybe", "Choose SSL/TLS"),
    ],
)
def test_invalid_input_is_refused_before_connecting(
    member, mailbox, field, value, text
):
    with pytest.raises(accounts.AccountError) as failure:
        accounts.connect_imap_account(member, mailbox.form(**{field: value}))
    assert text in str(failure.value.message)
    assert failure.value.field == field
    assert account_count() == 0


def test_connecting_again_updates_instead_of_duplicating(member, mailbox, dovecot):
    first = connect(member, mailbox)
    first.last_error = "old failure"
    db.session.commit()
    again = accounts.connect_imap_account(member, mailbox.form(imap_security="none"))
    assert again.id == first.id
    assert account_count() == 1
    assert again.last_error is None


def test_someone_else_cannot_take_over_a_connected_address(make_user, member, mailbox):
    connect(member, mailbox)
    other = make_user(Role.MEMBER)
    with pytest.raises(accounts.AccountError) as failure:
        accounts.connect_imap_account(other, mailbox.form())
    assert "already connected by Mara Member" in str(failure.value.message)


def test_prefill_only_for_microsoft_consumer_domains():
    for domain in ("hotmail.com", "live.com", "outlook.com"):
        prefill = accounts.prefill_for(f"someone@{domain}")
        assert prefill["imap_host"] == "outlook.office365.com"
        assert (prefill["imap_port"], prefill["imap_security"]) == (993, "ssl")
        assert prefill["smtp_host"] == "smtp-mail.outlook.com"
        assert (prefill["smtp_port"], prefill["smtp_security"]) == (587, "starttls")
    assert accounts.prefill_for("someone@example.test") is None
    assert accounts.prefill_for("") is None


def test_prefill_button_fills_servers_without_connecting(member, client_for):
    # The prefill action only renders; nothing may connect to Microsoft's hosts.
    response = client_for(member).post(
        "/email/connect/exchange",
        {"email": "mara@hotmail.com", "password": "secret-pw", "action": "prefill"},
    )
    assert response.status_code == 200
    assert b'value="outlook.office365.com"' in response.data
    assert b'value="smtp-mail.outlook.com"' in response.data
    assert b"secret-pw" not in response.data
    assert account_count() == 0


def test_connect_pages_offer_both_ways_and_explain_app_passwords(member, client_for):
    client = client_for(member)
    task_id = make_task().id
    chooser = client.get(f"/email/connect?task={task_id}")
    assert b"Sign in with Microsoft" in chooser.data
    assert b'aria-disabled="true"' in chooser.data
    assert b"An admin must configure Sign in with Microsoft first" in chooser.data
    assert b"Sign in with Exchange Server" in chooser.data
    form = client.get(f"/email/connect/exchange?email=a@live.com&task={task_id}")
    assert b"App passwords" in form.data
    assert b"may refuse app passwords" in form.data
    assert b'value="outlook.office365.com"' in form.data


def test_only_the_connecting_person_may_send(make_user, member, mailbox):
    account = connect(member, mailbox)
    admin = make_user(Role.ADMIN)
    assert accounts.may_send(member, account)
    assert not accounts.may_send(admin, account)
    assert accounts.accounts_user_may_send_from(member) == [account]
    assert accounts.accounts_user_may_send_from(admin) == []
    account.send_policy = "someone_new"
    assert not accounts.may_send(member, account)


def test_integration_page_lists_accounts_by_role(
    make_user, member, client_for, mailbox
):
    account = connect(member, mailbox)
    admin = make_user(Role.ADMIN)
    other = make_user(Role.MEMBER)
    assert mailbox.address.encode() in client_for(member).get("/email/settings").data
    assert mailbox.address.encode() in client_for(admin).get("/email/settings").data
    page = client_for(other).get("/email/settings")
    assert page.status_code == 200
    assert mailbox.address.encode() not in page.data
    # Members connect from a task; Settings tells them so.
    assert b'href="/email/connect"' not in page.data
    assert b"Members connect a mailbox from a task" in page.data

    refused = client_for(other).post(f"/email/accounts/{account.id}/delete")
    assert refused.status_code == 403
    assert (
        client_for(other).post(f"/email/accounts/{account.id}/sync").status_code == 403
    )
    done = client_for(admin).post(f"/email/accounts/{account.id}/delete")
    assert done.status_code == 302
    assert account_count() == 0


def test_composer_tells_who_to_ask_when_mailboxes_exist_but_none_is_yours(
    member, mailbox, make_user, client_for
):
    task = make_task()
    other = make_user(Role.MEMBER)
    page = client_for(other).get(f"/tasks/{task.id}?tab=email").get_data(as_text=True)
    assert 'id="ask-for-access"' not in page

    connect(member, mailbox)
    page = client_for(other).get(f"/tasks/{task.id}?tab=email").get_data(as_text=True)
    assert 'id="ask-for-access"' in page
    assert "ask the person who connected one" in page
    own = client_for(member).get(f"/tasks/{task.id}?tab=email").get_data(as_text=True)
    assert 'id="ask-for-access"' not in own
