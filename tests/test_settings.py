"""Settings: overview, apps, people, roles and invitation links."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from posta.extensions import db
from posta.models import Invite, Role, User, utcnow
from posta.services import people
from tests.fixtures.app import PASSWORD


@pytest.fixture
def admin(make_user):
    return make_user(Role.ADMIN)


@pytest.fixture
def member(make_user):
    return make_user(Role.MEMBER)


def invite_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Invite))


def test_overview_links_sections_by_role(owner, member, make_user, client_for):
    admin_page = client_for(owner).get("/settings/").get_data(as_text=True)
    assert "/settings/apps" in admin_page and "/settings/people" in admin_page
    for person in (member, make_user(Role.GUEST)):
        page = client_for(person).get("/settings/").get_data(as_text=True)
        assert "/settings/apps" not in page and "/settings/people" not in page
        assert "/preferences" in page


def test_overview_links_email_integration_only_when_on(
    workspace, member, make_user, client_for
):
    def page(user):
        return client_for(user).get("/settings/").get_data(as_text=True)

    assert "Email Integration" not in page(member)
    workspace.email_enabled = True
    db.session.commit()
    assert "Email Integration" in page(member)
    assert "Email Integration" not in page(make_user(Role.GUEST))


@pytest.mark.parametrize("url", ["/settings/apps", "/settings/people"])
@pytest.mark.parametrize("role", [Role.MEMBER, Role.GUEST])
def test_admin_pages_forbidden_to_members_and_guests(make_user, client_for, url, role):
    assert client_for(make_user(role)).get(url).status_code == 403


def test_non_admins_cannot_toggle_email_or_invite(workspace, member, client_for):
    client = client_for(member)
    assert client.post("/settings/apps", {"email_enabled": "y"}).status_code == 403
    assert workspace.email_enabled is False
    invite = client.post("/settings/people/invite", {"email": "x@example.test"})
    assert invite.status_code == 403
    assert invite_count() == 0


def test_admin_toggles_email_app(workspace, admin, client_for):
    client = client_for(admin)
    assert "email_enabled" in client.get("/settings/apps").get_data(as_text=True)
    client.post("/settings/apps", {"email_enabled": "y"})
    assert workspace.email_enabled is True
    client.post("/settings/apps", {})
    assert workspace.email_enabled is False


def test_only_owner_makes_admins(owner, admin, member, client_for):
    refused = client_for(admin).post(
        f"/settings/people/{member.id}/role", {"role": "admin"}, follow_redirects=True
    )
    assert "Only the owner can make someone an admin." in refused.get_data(as_text=True)
    assert member.role == Role.MEMBER

    client_for(owner).post(f"/settings/people/{member.id}/role", {"role": "admin"})
    assert member.role == Role.ADMIN


def test_admin_changes_member_to_guest(admin, member, client_for):
    client_for(admin).post(f"/settings/people/{member.id}/role", {"role": "guest"})
    assert member.role == Role.GUEST


def test_admin_cannot_touch_another_admin(admin, make_user, client_for):
    other = make_user(Role.ADMIN)
    client = client_for(admin)
    client.post(f"/settings/people/{other.id}/role", {"role": "member"})
    client.post(f"/settings/people/{other.id}/deactivate")
    assert (other.role, other.active) == (Role.ADMIN, True)


def test_owner_role_never_changes(owner, admin, client_for):
    for actor in (owner, admin):
        response = client_for(actor).post(
            f"/settings/people/{owner.id}/role",
            {"role": "member"},
            follow_redirects=True,
        )
        assert "cannot be changed" in response.get_data(as_text=True)
    assert owner.role == Role.OWNER


def test_deactivate_and_reactivate(admin, member, client_for):
    client = client_for(admin)
    client.post(f"/settings/people/{member.id}/deactivate")
    assert member.active is False
    login = client_for().post(
        "/login", {"email": member.email, "password": PASSWORD}, follow_redirects=True
    )
    assert "Wrong email or password" in login.get_data(as_text=True)
    client.post(f"/settings/people/{member.id}/reactivate")
    assert member.active is True


def test_deactivation_ends_an_open_session(admin, member, client_for):
    session = client_for(member)
    assert session.get("/").status_code == 200
    client_for(admin).post(f"/settings/people/{member.id}/deactivate")
    response = session.get("/")
    assert response.status_code == 302
    assert "/login" in response.location


def test_cannot_deactivate_owner_or_self(owner, admin, client_for):
    client = client_for(admin)
    client.post(f"/settings/people/{owner.id}/deactivate")
    mine = client.post(f"/settings/people/{admin.id}/deactivate", follow_redirects=True)
    assert "You cannot deactivate or reactivate yourself." in mine.get_data(
        as_text=True
    )
    assert owner.active and admin.active


def test_unknown_person_or_invite_is_404(owner, client_for):
    client = client_for(owner)
    assert (
        client.post("/settings/people/999/role", {"role": "guest"}).status_code == 404
    )
    assert client.post("/settings/people/999/deactivate").status_code == 404
    assert client.post("/settings/invites/999/revoke").status_code == 404


def invite_link(client, email, role) -> str:
    response = client.post("/settings/people/invite", {"email": email, "role": role})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    match = re.search(r'value="(http://localhost/invite/[^"]+)"', response.text)
    assert match, response.text
    return match.group(1).removeprefix("http://localhost")


def test_invite_link_flow_end_to_end(owner, client_for):
    inviter = client_for(owner)
    path = invite_link(inviter, "new@example.test", "guest")
    assert "Posta does not send invitation emails" in inviter.get(
        "/settings/people"
    ).get_data(as_text=True)
    # The link is shown once: the people page never repeats it.
    assert path not in inviter.get("/settings/people").get_data(as_text=True)

    visitor = client_for()
    assert "new@example.test" in visitor.get(path).get_data(as_text=True)
    joined = visitor.post(
        path, {"name": "Nina New", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert joined.status_code == 302
    user = User.by_email("new@example.test")
    assert (user.name, user.role) == ("Nina New", Role.GUEST)
    assert visitor.get("/settings/").status_code == 200
    assert visitor.get("/settings/people").status_code == 403

    assert visitor.get(path).status_code == 404


def test_admin_cannot_invite_admin(admin, client_for):
    response = client_for(admin).post(
        "/settings/people/invite",
        {"email": "boss@example.test", "role": "admin"},
        follow_redirects=True,
    )
    assert "Only the owner can invite admins." in response.get_data(as_text=True)
    assert invite_count() == 0


@pytest.mark.parametrize(
    "email, message",
    [("not an address", "not valid"), ("owner@example.test", "already exists")],
)
def test_bad_invite_changes_nothing(owner, client_for, email, message):
    response = client_for(owner).post(
        "/settings/people/invite",
        {"email": email, "role": "member"},
        follow_redirects=True,
    )
    assert message in response.get_data(as_text=True)
    assert invite_count() == 0


def test_revoked_invite_is_404(owner, client_for):
    client = client_for(owner)
    path = invite_link(client, "later@example.test", "member")
    pending = db.session.scalars(select(Invite)).one()
    assert "later@example.test" in client.get("/settings/people").get_data(as_text=True)
    client.post(f"/settings/invites/{pending.id}/revoke")
    assert invite_count() == 0
    assert client_for().get(path).status_code == 404


def test_expired_invite_is_404(owner, client_for):
    token = people.invite(owner, "late@example.test", "member", days=7)
    invite = db.session.scalars(select(Invite)).one()
    invite.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert client_for().get(f"/invite/{token}").status_code == 404
    assert "Expired" in client_for(owner).get("/settings/people").get_data(as_text=True)


def test_used_invite_cannot_be_revoked_or_reused(owner, client_for):
    token = people.invite(owner, "used@example.test", "member", days=7)
    people.accept_invite(token, "Used", PASSWORD)
    invite = db.session.scalars(select(Invite)).one()
    response = client_for(owner).post(
        f"/settings/invites/{invite.id}/revoke", follow_redirects=True
    )
    assert "already accepted" in response.get_data(as_text=True)
    assert client_for().get(f"/invite/{token}").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/settings/apps",
        "/settings/people/invite",
        "/settings/people/{member}/role",
        "/settings/people/{member}/deactivate",
        "/settings/people/{guest}/reactivate",
        "/settings/invites/{invite}/revoke",
    ],
)
def test_every_post_needs_csrf_token(
    workspace, owner, member, make_user, client_for, url
):
    guest = make_user(Role.GUEST)
    guest.active = False
    db.session.commit()
    people.invite(owner, "pending@example.test", "member", days=7)
    invite = db.session.scalars(select(Invite)).one()
    url = url.format(member=member.id, guest=guest.id, invite=invite.id)
    data = {"email_enabled": "y", "email": "x@example.test", "role": "guest"}

    response = client_for(owner).post(url, data, csrf=False)

    assert response.status_code == 400
    assert workspace.email_enabled is False
    assert (member.role, member.active, guest.active) == (Role.MEMBER, True, False)
    assert invite_count() == 1
