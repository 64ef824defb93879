"""First-run setup, login, logout, invitations and CSRF."""

from posta.models import Role, User, Workspace
from tests.fixtures.app import PASSWORD


def test_first_visit_goes_to_setup(app, client_for):
    response = client_for().get("/")
    assert response.status_code == 302
    assert response.location.endswith("/setup")


def test_setup_creates_workspace_and_owner(app, client_for):
    client = client_for()
    response = client.post(
        "/setup",
        {
            "workspace_name": "Acme",
            "name": "Olga",
            "email": "olga@example.test",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert response.status_code == 302
    assert Workspace.get().name == "Acme"
    assert User.by_email("olga@example.test").role == Role.OWNER
    assert client.get("/setup").status_code == 302


def test_setup_refuses_short_password_and_stores_nothing(app, client_for):
    response = client_for().post(
        "/setup",
        {
            "workspace_name": "Acme",
            "name": "Olga",
            "email": "olga@example.test",
            "password": "short",
            "confirm": "short",
        },
    )
    assert response.status_code == 200
    assert b"at least 8 characters" in response.data
    assert Workspace.get() is None


def test_login_and_logout(workspace, client_for):
    client = client_for()
    bad = client.post("/login", {"email": "owner@example.test", "password": "nope"})
    assert b"Wrong email or password" in bad.data
    good = client.post("/login", {"email": "owner@example.test", "password": PASSWORD})
    assert good.status_code == 302
    assert client.get("/preferences").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/preferences").status_code == 302


def test_post_without_csrf_token_is_refused(workspace, client_for):
    client = client_for()
    response = client.post(
        "/login", {"email": "owner@example.test", "password": PASSWORD}, csrf=False
    )
    assert response.status_code == 400
    assert client.get("/preferences").status_code == 302


def test_login_ignores_offsite_next(workspace, client_for):
    response = client_for().post(
        "/login?next=//evil.invalid/x",
        {"email": "owner@example.test", "password": PASSWORD},
    )
    assert response.location == "/"


def test_users_create_cli_reads_password_from_stdin(app, workspace):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "m@example.test",
            "--role",
            "member",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert User.by_email("m@example.test").check_password(PASSWORD)

    again = runner.invoke(
        args=["users", "create", "--email", "m@example.test", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert again.exit_code != 0
    assert "already exists" in again.output
