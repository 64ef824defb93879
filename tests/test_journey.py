"""The whole spine in headless Chromium, against real Dovecot and SMTP servers.

First-run setup, turn the Email app on, create a list and a task, connect a mailbox
from the task, send, a reply lands in the Dovecot mailbox, sync runs, and the reply
shows in the task's activity stream.
"""

import email
import time

import pytest

from tests.email_support import make_mailbox, reply_to

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
HOSTILE_HTML = (
    "<p>Thanks, <b>the quote is fine</b>.</p>"
    "<script>window.parent.document.title='pwned'</script>"
    "<img src=x onerror=\"window.parent.document.title='pwned'\">"
)


def set_up_workspace(page, url):
    page.goto(url + "/")
    page.fill("input[name=workspace_name]", "Acme")
    page.fill("input[name=name]", "Olga Owner")
    page.fill("input[name=email]", "olga@example.test")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def turn_email_on(page, url):
    page.goto(url + "/settings/apps")
    page.check("input[name=email_enabled]")
    page.click("main form button[type=submit]")
    page.wait_for_load_state()


def create_task(page, url) -> str:
    page.goto(url + "/")
    page.fill("form[action='/lists'] input[name=name]", "Sales")
    page.click("form[action='/lists'] button[type=submit]")
    page.wait_for_url("**/lists/*")
    page.fill("form[action$='/tasks'] input[name=name]", "Quote for Rossi")
    page.click("form[action$='/tasks'] button[type=submit]")
    page.wait_for_url("**/tasks/*")
    return page.url.split("?")[0]


def connect_from_task(page, mailbox):
    page.click("#tab-email")
    page.click("#connect-email")
    page.click("#connect-exchange")
    page.fill("input[name=email]", mailbox.address)
    page.fill("input[name=password]", mailbox.password)
    page.fill("input[name=imap_host]", "127.0.0.1")
    page.fill("input[name=imap_port]", str(mailbox.dovecot.port))
    page.select_option("select[name=imap_security]", "none")
    page.fill("input[name=smtp_host]", "127.0.0.1")
    page.fill("input[name=smtp_port]", str(mailbox.smtp.port))
    page.select_option("select[name=smtp_security]", "none")
    page.click("button[value=connect]")
    page.wait_for_load_state()


def wait_for_text(page, task_url, text, timeout=20.0):
    """Reload the task page until text shows in its stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(task_url)
        if text in page.inner_text("main"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never showed on {task_url}")


def test_send_from_a_task_and_see_the_reply(live_server, page, dovecot, smtp):
    url = live_server.url
    mailbox = make_mailbox(dovecot, smtp, local="olga")
    set_up_workspace(page, url)
    turn_email_on(page, url)
    task_url = create_task(page, url)

    connect_from_task(page, mailbox)
    assert page.url.startswith(task_url)
    assert "Password or app password" not in page.content()
    page.click("#tab-email")
    assert mailbox.address in page.inner_text("#email-from")

    page.fill("#email-form input[name=to]", "rossi@client.test")
    page.fill("#email-form textarea[name=body]", "Here is the quote.")
    page.click("#email-form button[type=submit]")
    wait_for_text(page, task_url, "Sent")
    assert len(smtp.messages) == 1
    mail_from, rcpts, raw = smtp.messages[0]
    sent = email.message_from_bytes(raw)
    assert rcpts == ["rossi@client.test"]
    assert (
        sent["Subject"].startswith("Quote for Rossi")
        or "Quote for Rossi" in sent["Subject"]
    )

    dovecot.deliver(
        mailbox.address,
        reply_to(sent["Message-ID"], to=mailbox.address, html=HOSTILE_HTML),
    )
    page.goto(url + "/email/settings")
    page.get_by_role("button", name="Sync now").first.click()
    wait_for_text(page, task_url, "Email received")

    stream = page.inner_text("main")
    assert "Mario Rossi" in stream
    frame = page.frame_locator("iframe.email-html").first
    assert "the quote is fine" in frame.locator("body").inner_text()
    page.wait_for_timeout(300)
    assert page.title() != "pwned"
