"""Bench 6: `flask email watch` through the 20 ms proxy: latency and cost per poll.

The watcher runs as a child process on a copy of the instance in which only
account "a" (already imported) is active, so it touches nothing the other
benches measure. DELIVERIES replies to one of a's sent messages are dropped
into a's Maildir one at a time, each after a random pause shorter than the poll
period (so deliveries fall at random points of the poll cycle); the latency is
delivery -> its row in the database (what the task page shows). Run once with
IDLE and once polling only (`--no-idle`, POLL_SECONDS).

Per-poll cost is taken on the idle mailbox in polling mode (a poll every
QUIET_POLL_SECONDS) over QUIET_SECONDS: proxy round trips, and the whole child
process's CPU, divided by the sync passes it logged.
"""

import os
import random
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from sqlalchemy import select, update

from bench.rig import REPO, Rig
from bench.servers import MAIL_GID, MAIL_UID
from bench.table import Row, percentile
from posta.extensions import db
from posta.models import AccountStatus, EmailAccount, Message, utcnow

NAME = "new_mail"
DELIVERIES = 50
POLL_SECONDS = 2.0
# Faster polls while measuring the cost of one, so a window holds many of them.
QUIET_POLL_SECONDS = 0.5
QUIET_SECONDS = 10.0
ARRIVAL_TIMEOUT = 60
FLASK = str(Path(sys.executable).parent / "flask")


def run(rig: Rig) -> list[Row]:
    """Measure the watcher with IDLE and polling only; return the rows."""
    rig.ensure_imported()
    instance = rig.instance.copy(rig.workdir / "watch-instance")
    parent = _only_account_a(rig, instance)
    idle = _latencies(rig, instance, parent, [])
    polled = _latencies(rig, instance, parent, ["--no-idle"])
    quiet = _quiet_polls(rig, instance)
    return [
        Row(NAME, "IDLE: delivery -> on task p50", idle[0], "s"),
        Row(
            NAME,
            "IDLE: delivery -> on task p95",
            idle[1],
            "s",
            target="<= 2 s",
            ok=idle[1] is not None and idle[1] <= 2,
        ),
        Row(NAME, f"polling every {POLL_SECONDS:g} s: p50", polled[0], "s"),
        Row(NAME, f"polling every {POLL_SECONDS:g} s: p95", polled[1], "s"),
        Row(
            NAME,
            "round trips/poll, watch session",
            quiet["rt"],
            "RT",
            target="1 per folder",
            ok=quiet["rt"] <= 1,
        ),
        Row(
            NAME,
            "CPU/poll, watch process",
            quiet["cpu"],
            "ms",
            target="<= 10 ms",
            ok=quiet["cpu"] <= 10,
        ),
    ]


def _only_account_a(rig: Rig, instance) -> str:
    """Disable every account but a's in the copy; return a Message-ID to reply to."""
    account = rig.instance.accounts["a"]
    with instance.app().app_context():
        db.session.execute(
            update(EmailAccount)
            .where(EmailAccount.id != account)
            .values(status=AccountStatus.DISABLED.value)
        )
        parent = db.session.scalar(
            select(Message.message_id)
            .where(Message.account_id == account, Message.direction == "out")
            .limit(1)
        )
        db.session.commit()
        db.session.remove()
    return parent


def _start(instance, extra: list[str], log: Path, poll: float) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [FLASK, "--app", "app", "email", "watch", "--poll", str(poll), *extra],
            cwd=REPO,
            env=instance.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGTERM)
    child.wait(30)


def _latencies(rig: Rig, instance, parent: str, extra: list[str]) -> tuple:
    """Deliver DELIVERIES replies one by one; return latency (p50, p95) in s."""
    log = rig.workdir / "watch.log"
    child = _start(instance, extra, log, POLL_SECONDS)
    app = instance.app()
    seconds = []
    try:
        _wait_first_pass(log)
        for _ in range(DELIVERIES):
            time.sleep(random.uniform(0, POLL_SECONDS))
            message_id = make_msgid(domain="client.test")
            delivered = time.monotonic()
            _deliver(rig, _reply(parent, message_id))
            _wait_stored(app, message_id, delivered + ARRIVAL_TIMEOUT)
            seconds.append(time.monotonic() - delivered)
    finally:
        _stop(child)
    return percentile(seconds, 50), percentile(seconds, 95)


def _quiet_polls(rig: Rig, instance) -> dict:
    """Poll the idle mailbox for QUIET_SECONDS; return round trips and CPU per pass."""
    log = rig.workdir / "watch-quiet.log"
    child = _start(instance, ["--no-idle"], log, QUIET_POLL_SECONDS)
    try:
        _wait_first_pass(log)
        time.sleep(1)
        passes_before = _passes(log)
        cpu_before = _cpu_seconds(child.pid)
        rig.proxy.reset()
        time.sleep(QUIET_SECONDS)
        counters = rig.proxy.reset()
        cpu = _cpu_seconds(child.pid) - cpu_before
        passes = _passes(log) - passes_before
    finally:
        _stop(child)
    if passes < 1:
        raise RuntimeError("the watcher made no sync pass while measured")
    return {"rt": counters.round_trips / passes, "cpu": cpu * 1000 / passes}


def _passes(log: Path) -> int:
    return log.read_text(errors="replace").count(": sync started")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_stored(app, message_id: str, deadline: float) -> None:
    """Wait until the watcher stored the message with this Message-ID."""
    with app.app_context():
        while time.monotonic() < deadline:
            found = db.session.scalar(
                select(Message.id).where(Message.message_id == message_id)
            )
            db.session.commit()
            if found is not None:
                db.session.remove()
                return
            time.sleep(0.01)
        db.session.remove()
    raise TimeoutError(f"{message_id} not stored in time")


def _wait_first_pass(log: Path) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while ": sync finished" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the watcher made no pass: {log.read_text()[-500:]}")
        time.sleep(0.05)


def _reply(parent: str, message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Client <client@client.test>"
    msg["To"] = "bench@posta.test"
    msg["Subject"] = "Re: bench"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    msg["In-Reply-To"] = parent
    msg["References"] = parent
    msg.set_content("A new reply, for the latency bench.\n")
    return msg.as_bytes()


def _deliver(rig: Rig, raw: bytes) -> None:
    """Drop a message into a's Maildir new/ the way an MDA does."""
    maildir = rig.dovecot.maildir(rig.mailboxes["a"].address)
    name = f"{time.time():.6f}.P{os.getpid()}.bench"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(raw)
    os.chown(tmp, MAIL_UID, MAIL_GID)
    os.rename(tmp, maildir / "new" / name)
