"""Sign in with Microsoft: the code flow, its errors, and what gets stored."""

import json
from pathlib import Path

import pytest
from flask import current_app

from posta.extensions import db
from posta.models import AccountStatus, Role
from posta.services import microsoft
from tests.email_support import make_task
from tests.microsoft_support import (
    accounts,
    app_config,  # noqa: F401
    local,
    query,
    sign_in,
    start,
)

ADDRESS = "ada@contoso.test"


@pytest.fixture
def member(make_user, email_on):
    return make_user(Role.MEMBER, name="Mia Member")


@pytest.fixture
def task(email_on):
    return make_task()


def test_authorize_request_has_pkce_state_nonce_and_only_our_scopes(
    client_for, member, task, fake_microsoft
):
    client = client_for(member)
    page = client.get(f"/email/microsoft/?task={task.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for name in ("User.Read", "Mail.Read", "Mail.Send", "Contacts.Read"):
        assert name in text
    assert "offline_access" in text and "Keep syncing" in text

    url = start(client, task=task.id)
    assert url.startswith(fake_microsoft.authorize_url)
    params = query(url)
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) >= 43
    assert params["state"] and params["nonce"]
    assert params["redirect_uri"] == "http://localhost/email/microsoft/callback"
    assert set(params["scope"].split()) == set(microsoft.SCOPES)
    assert params["response_type"] == "code"


def test_code_flow_connects_the_mailbox_and_asks_who_may_send(
    client_for, member, task, fake_microsoft
):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    client = client_for(member)
    response = sign_in(client, fake_microsoft, ADDRESS, task=task.id)
    assert response.status_code == 302
    access_url = local(response.headers["Location"])
    assert access_url.startswith("/email/microsoft/accounts/")
    [account] = accounts()
    assert (account.kind, account.email, account.display_name) == (
        "graph",
        ADDRESS,
        "Ada Lovelace",
    )
    assert account.personal is False and account.status == AccountStatus.ACTIVE
    assert account.connected_by_id == member.id

    page = client.get(access_url)
    assert "Who may send email from this account?" in page.get_data(as_text=True)
    done = client.post(access_url, data={"send_policy": "admins"})
    assert done.status_code == 302
    assert local(done.headers["Location"]).startswith(f"/tasks/{task.id}")
    assert accounts()[0].send_policy == "admins"
    # The token exchange used the PKCE verifier (the fake checks it) and the code.
    assert fake_microsoft.count("/oauth2/v2.0/token", "POST") == 1


def test_personal_account_is_recognised(client_for, member, task, fake_microsoft):
    fake_microsoft.add_user("bob@outlook.test", "Bob", personal=True)
    sign_in(client_for(member), fake_microsoft, "bob@outlook.test", task=task.id)
    [account] = accounts()
    assert account.personal is True


def test_personal_by_domain_and_consumer_tenant():
    from posta.mail.graph import GraphUser

    work = GraphUser("5b1c9f0e-0000-4000-8000-000000000000", "a@x.test", "A", False)
    assert not microsoft.is_personal(work, {})
    assert microsoft.is_personal(work, {"tid": microsoft.CONSUMER_TENANT_ID})
    hotmail = GraphUser(work.id, "a@hotmail.com", "A", False)
    assert microsoft.is_personal(hotmail, {})


def test_same_mailbox_twice_updates_one_account(
    client_for, member, task, fake_microsoft
):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    client = client_for(member)
    sign_in(client, fake_microsoft, ADDRESS, task=task.id)
    first = json.loads(
        current_app.extensions["posta_secrets"].decrypt(accounts()[0].secret)
    )
    sign_in(client, fake_microsoft, ADDRESS, task=task.id)
    [account] = accounts()
    second = json.loads(current_app.extensions["posta_secrets"].decrypt(account.secret))
    assert second["refresh_token"] != first["refresh_token"]


def test_tokens_are_encrypted_at_rest(client_for, member, task, fake_microsoft):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    sign_in(client_for(member), fake_microsoft, ADDRESS, task=task.id)
    [account] = accounts()
    token = json.loads(current_app.extensions["posta_secrets"].decrypt(account.secret))
    assert set(token) >= {"access_token", "refresh_token", "expires_at"}
    assert token["access_token"].encode() not in account.secret
    db.session.commit()
    path = Path(db.engine.url.database)
    stored = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    assert ADDRESS.encode() in stored
    assert token["access_token"].encode() not in stored
    assert token["refresh_token"].encode() not in stored


def test_missing_offline_access_still_connects(
    client_for, member, task, fake_microsoft
):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    fake_microsoft.grant_offline_access = False
    client = client_for(member)
    response = sign_in(client, fake_microsoft, ADDRESS, task=task.id)
    assert response.status_code == 302
    [account] = accounts()
    assert account.status == AccountStatus.ACTIVE
    page = client.get(local(response.headers["Location"]))
    assert "offline access" in page.get_data(as_text=True)


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        ("decline", "You declined the permissions"),
        (("authorize", 65001), "An administrator of your Microsoft organisation"),
        (("authorize", 50020), "This kind of Microsoft account cannot sign in"),
        (("authorize", 50194), "This kind of Microsoft account cannot sign in"),
        (("token", 54005), "The sign-in expired or was already used"),
        (("token", 70008), "The sign-in expired or was already used"),
    ],
)
def test_microsoft_errors_become_sentences_and_store_nothing(
    client_for, member, task, fake_microsoft, fail, expected
):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    if fail != "decline":
        kind, code = fail
        if kind == "authorize":
            fake_microsoft.fail_next_authorize(code)
        else:
            fake_microsoft.fail_next_token(code)
    client = client_for(member)
    response = sign_in(
        client, fake_microsoft, ADDRESS, accept=fail != "decline", task=task.id
    )
    assert response.status_code == 302
    landing = local(response.headers["Location"])
    assert landing.startswith("/email/connect")
    assert f"task={task.id}" in landing
    assert expected in client.get(landing).get_data(as_text=True)
    assert accounts() == []


def test_state_mismatch_is_refused(client_for, member, task, fake_microsoft):
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    client = client_for(member)
    fake_microsoft.sign_in(ADDRESS)
    location = fake_microsoft.consent(start(client, task=task.id))
    forged = local(location).replace(
        f"state={query(location)['state']}", "state=forged"
    )
    response = client.get(forged)
    page = client.get(local(response.headers["Location"])).get_data(as_text=True)
    assert "does not belong to this browser session" in page
    assert accounts() == []
    # The code was never redeemed.
    assert fake_microsoft.count("/oauth2/v2.0/token") == 0


def test_connect_page_enables_microsoft_only_when_configured(
    app, client_for, member, task
):
    page = client_for(member).get(f"/email/connect?task={task.id}")
    assert f"/email/microsoft/?task={task.id}" in page.get_data(as_text=True)
    app.config["MICROSOFT_CLIENT_ID"] = None
    page = client_for(member).get(f"/email/connect?task={task.id}")
    text = page.get_data(as_text=True)
    assert "An admin must configure Sign in with Microsoft" in text
    assert "/email/microsoft/?" not in text
    assert client_for(member).get("/email/microsoft/").status_code == 404


def test_integration_page_shows_setup_and_redirect_uri(client_for, owner, email_on):
    text = client_for(owner).get("/email/settings").get_data(as_text=True)
    assert "Sign in with Microsoft is configured." in text
    assert "http://localhost/email/microsoft/callback" in text
    assert "Certificates &" in text and "offline_access" in text


def test_no_js_fallback_keeps_the_draft_and_selects_the_new_account(
    client_for, member, task, fake_microsoft, email_on
):
    from tests.microsoft_support import graph_account

    email_on.plan = "business"  # two accounts
    graph_account(member, fake_microsoft, "first@contoso.test")
    client = client_for(member)
    draft = {
        "account_id": "add-new",
        "to": "rossi@client.test",
        "cc": "",
        "bcc": "",
        "subject": "Quote",
        "body": "Kept while I connect.",
    }
    response = client.post(f"/email/tasks/{task.id}/send", data=draft)
    assert local(response.headers["Location"]) == f"/email/connect?task={task.id}"
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    callback = sign_in(client, fake_microsoft, ADDRESS, task=task.id)
    done = client.post(
        local(callback.headers["Location"]), data={"send_policy": "only_me"}
    )
    page = client.get(local(done.headers["Location"])).get_data(as_text=True)
    assert "Kept while I connect." in page and "rossi@client.test" in page
    new = next(a for a in accounts() if a.email == ADDRESS)
    assert f'<option value="{new.id}" selected>' in page
