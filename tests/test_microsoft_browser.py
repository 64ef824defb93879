"""Sign in with Microsoft from a task, in headless Chromium, against the fake."""

import time

import pytest

from tests.microsoft_support import microsoft_config
from tests.test_journey import create_task, set_up_workspace, turn_email_on

pytestmark = pytest.mark.browser

ADDRESS = "ada@contoso.test"
CLIENT = "rossi@client.test"


@pytest.fixture
def live_app_config(fake_microsoft):
    return microsoft_config(fake_microsoft)


def _eventually(check, timeout=20.0, every=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError("condition never held")


def _sync_now(page, url):
    page.goto(url + "/email/settings")
    page.click("#email-accounts button:has-text('Sync now')")
    page.wait_for_load_state()


def test_connect_in_popup_send_sync_and_reconnect_banner(
    live_server, page, fake_microsoft
):
    url = live_server.url
    fake_microsoft.redirect_uris.append(url + "/email/microsoft/callback")
    fake_microsoft.add_user(ADDRESS, "Ada Lovelace")
    set_up_workspace(page, url)
    turn_email_on(page, url)
    task_url = create_task(page, url)

    page.goto(task_url + "?tab=email")
    page.evaluate("window.__samePage = true")
    with page.expect_popup() as opened:
        page.click("#connect-email")
    popup = opened.value
    popup.click("#connect-microsoft")
    popup.click("#continue-microsoft")
    assert ADDRESS in popup.inner_text("#account")
    popup.click("#accept")
    popup.check("input[name=send_policy][value=only_me]")
    with popup.expect_event("close"):
        popup.click("#microsoft-done-button")

    page.wait_for_selector(
        f"#email-from option:has-text('{ADDRESS}')", state="attached"
    )
    assert page.evaluate("window.__samePage") is True

    page.fill("#email-form input[name=to]", CLIENT)
    page.fill("#email-form textarea[name=body]", "Here is the quote.")
    page.click("#email-form button[type=submit]")
    page.wait_for_load_state()
    _eventually(lambda: len(fake_microsoft.sent) == 1)
    sent = fake_microsoft.sent[0]
    assert sent.message["toRecipients"][0]["emailAddress"]["address"] == CLIENT

    fake_microsoft.deliver(
        ADDRESS,
        subject="Re: Quote",
        sender=("Mario Rossi", CLIENT),
        body_text="The quote is fine, thanks.",
        in_reply_to=sent.headers["Message-ID"],
    )
    _sync_now(page, url)

    def reply_shown():
        page.goto(task_url)
        return "The quote is fine, thanks." in page.inner_text(".stream")

    _eventually(reply_shown)

    fake_microsoft.revoke_refresh_tokens(ADDRESS)
    fake_microsoft.expire_access_tokens()
    _sync_now(page, url)

    def banner_shown():
        page.goto(task_url)
        return page.locator("[id^=reconnect-]").count() == 1

    _eventually(banner_shown)
    banner = page.inner_text("[id^=reconnect-]")
    assert ADDRESS in banner and "Reconnect" in banner
