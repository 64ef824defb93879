"""Every Email URL: 404 while the app is off, 403 to guests, CSRF on every POST."""

import pytest
from flask import Flask

from blueprints.email import bp
from posta.models import Role
from tests.email_support import make_task


def _email_routes():
    """Return (method, url) for every email route, ids filled in with 1."""
    probe = Flask(__name__)
    probe.register_blueprint(bp)
    routes = []
    for rule in probe.url_map.iter_rules():
        if not rule.endpoint.startswith("email."):
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = url.replace(f"<int:{argument}>", "1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, url))
    return routes


ROUTES = _email_routes()
POSTS = [url for method, url in ROUTES if method == "POST"]


def request(client, method, url, **kwargs):
    if method == "POST":
        return client.post(url, **kwargs)
    return client.get(url)


def test_every_email_route_of_the_app_is_covered(app):
    real = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("email.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert len(real) == len(ROUTES) >= 10
    assert {"POST", "GET"} == {method for method, _ in ROUTES}


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_every_email_url_is_404_while_the_app_is_off(owner, client_for, method, url):
    assert request(client_for(owner), method, url).status_code == 404


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_every_email_url_is_403_for_guests(
    make_user, email_on, client_for, method, url
):
    guest = make_user(Role.GUEST)
    assert request(client_for(guest), method, url).status_code == 403


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_every_email_url_needs_a_login(email_on, client_for, method, url):
    response = request(client_for(), method, url)
    assert response.status_code == 302
    assert "/login" in response.location


@pytest.mark.parametrize("url", POSTS)
def test_every_email_post_without_csrf_is_refused(owner, email_on, client_for, url):
    response = client_for(owner).post(url, csrf=False)
    assert response.status_code == 400


def test_guests_see_no_email_on_the_task_page(make_user, email_on, client_for):
    task = make_task()
    page = client_for(make_user(Role.GUEST)).get(f"/tasks/{task.id}?tab=email")
    assert page.status_code == 200
    assert b'id="email-form"' not in page.data
    assert b"connect-email" not in page.data
