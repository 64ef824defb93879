"""Helpers for the Sign in with Microsoft tests: configuration, flow, accounts."""

from urllib.parse import parse_qs, urlsplit

import pytest

from posta.extensions import db
from posta.models import EmailAccount
from posta.services import microsoft

CALLBACK = "http://localhost/email/microsoft/callback"


def microsoft_config(fake) -> dict:
    """Point every MICROSOFT_* setting at the local fake."""
    return {
        "MICROSOFT_CLIENT_ID": fake.client_id,
        "MICROSOFT_CLIENT_SECRET": fake.client_secret,
        "MICROSOFT_AUTHORITY": fake.base_url,
        "MICROSOFT_TENANT": fake.tenant,
        "MICROSOFT_GRAPH_URL": fake.graph_url,
    }


@pytest.fixture
def app_config(fake_microsoft):
    fake_microsoft.redirect_uris.append(CALLBACK)
    return microsoft_config(fake_microsoft)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def local(url: str) -> str:
    """Return the path and query of a URL on the app."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def start(client, **form):
    """Press Continue to Microsoft; return the authorize URL Posta redirected to."""
    response = client.post("/email/microsoft/authorize", data=form)
    assert response.status_code == 302, response.data
    return response.headers["Location"]


def sign_in(client, fake, address, accept=True, **form):
    """Run the code flow to the callback; return the callback's response."""
    fake.sign_in(address)
    location = fake.consent(start(client, **form), accept=accept)
    return client.get(local(location))


def graph_account(user, fake, address, name="Ada Lovelace") -> EmailAccount:
    """Connect a Microsoft mailbox directly, as the flow's last step does."""
    if address.lower() not in fake.users:
        fake.add_user(address, name)
    token = fake.grant(address, microsoft.SCOPES)
    profile, token = microsoft.read_profile(token)
    return microsoft.connect_account(user, token, profile, {})


def accounts() -> list[EmailAccount]:
    db.session.expire_all()
    return db.session.scalars(db.select(EmailAccount).order_by(EmailAccount.id)).all()
