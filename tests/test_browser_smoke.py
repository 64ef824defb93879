"""The first-run setup in a real headless Chromium."""

import pytest

pytestmark = pytest.mark.browser


def test_first_run_setup_in_browser(live_server, page):
    page.goto(live_server.url + "/")
    assert page.url.endswith("/setup")
    page.fill("input[name=workspace_name]", "Acme")
    page.fill("input[name=name]", "Olga Owner")
    page.fill("input[name=email]", "olga@example.test")
    page.fill("input[name=password]", "correct horse battery")
    page.fill("input[name=confirm]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "Welcome to Posta" in page.content()
    assert "Acme" in page.title()
