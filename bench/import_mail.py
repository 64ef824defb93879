"""Bench 1: import the corpus through the 20 ms proxy; peers mbsync and naive imaplib.

Posta runs jobs.sync_account in a child process (bench.import_worker) so its peak
RSS is its own. mbsync copies the same mailbox into a Maildir through the same
proxy. The naive fetcher does one UID FETCH per message on the first NAIVE_COUNT
messages.
"""

import imaplib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.rig import Rig, wait4
from bench.table import Row
from posta.extensions import db
from posta.models import Attachment, Message

NAME = "import"
NAIVE_COUNT = 300
MBSYNC_TIMEOUT = 300
MBSYNC_CONF = """\
IMAPAccount bench
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path {root}/
Inbox {root}/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
SyncState *
"""


def run(rig: Rig) -> list[Row]:
    """Measure the three importers and return the rows."""
    posta, _ = rig.run_import("a")
    stored, on_heavy, files = _stored(rig)
    peak_mb = posta["rss"]
    mbsync = _mbsync(rig)
    naive_rate = _naive(rig)
    rate = posta["added"] / posta["wall"]
    mbsync_rate = rig.count / mbsync["wall"]
    return [
        Row(
            NAME,
            "messages stored on tasks",
            stored,
            "msgs",
            target=f"= {rig.count}",
            ok=stored == rig.count,
        ),
        Row(
            NAME,
            "on the 200-reply task / attachments",
            on_heavy,
            "msgs",
            peer=files,
            peer_name="attachment rows",
        ),
        Row(NAME, "wall time", posta["wall"], "s", mbsync["wall"], "mbsync"),
        Row(
            NAME,
            "throughput vs mbsync",
            rate,
            "msg/s",
            mbsync_rate,
            "mbsync",
            ">= 1.0x",
            rate >= mbsync_rate,
        ),
        Row(
            NAME,
            "throughput vs naive",
            rate,
            "msg/s",
            naive_rate,
            f"imaplib 1 FETCH/msg, {NAIVE_COUNT} msgs",
            ">= 30x",
            rate >= 30 * naive_rate,
        ),
        Row(NAME, "CPU", posta["cpu"], "s", mbsync["cpu"], "mbsync"),
        Row(
            NAME,
            "peak RSS",
            peak_mb,
            "MB",
            mbsync["rss"],
            "mbsync",
            "<= 200 MB",
            peak_mb <= 200,
        ),
        Row(NAME, "corpus", rig.corpus_bytes / 1e6, "MB"),
    ]


def _stored(rig: Rig) -> tuple[int, int, int]:
    """Return (received messages on tasks, on the heavy task, attachments)."""
    app = rig.instance.app()
    account = rig.instance.accounts["a"]
    with app.app_context():
        received = select(func.count(Message.id)).where(
            Message.account_id == account,
            Message.direction == "in",
            Message.task_id.is_not(None),
        )
        stored = db.session.scalar(received)
        heavy = db.session.scalar(
            received.where(Message.task_id == rig.instance.heavy_task["a"])
        )
        files = db.session.scalar(
            select(func.count(Attachment.id))
            .join(Message)
            .where(Message.account_id == account)
        )
        db.session.remove()
    return stored, heavy, files


def _mbsync(rig: Rig) -> dict:
    """Copy mailbox "a" with mbsync through the proxy; return wall, CPU and RSS."""
    mailbox = rig.mailboxes["a"]
    with tempfile.TemporaryDirectory(prefix="bench-mbsync-") as root:
        for sub in ("cur", "new", "tmp"):
            Path(root, "INBOX", sub).mkdir(parents=True)
        conf = Path(root, "mbsyncrc")
        conf.write_text(
            MBSYNC_CONF.format(
                port=rig.proxy.port,
                user=mailbox.address,
                password=mailbox.password,
                root=root,
            )
        )
        conf.chmod(0o600)
        start = time.perf_counter()
        child = subprocess.Popen(
            ["mbsync", "-c", str(conf), "-q", "bench"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        status, usage, peak = wait4(child, MBSYNC_TIMEOUT)
        wall = time.perf_counter() - start
        copied = len(os.listdir(Path(root, "INBOX", "cur"))) + len(
            os.listdir(Path(root, "INBOX", "new"))
        )
    if status != 0 or copied != rig.count:
        raise RuntimeError(
            f"mbsync exited {status} with {copied} messages: {child.stderr.read()}"
        )
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": peak,
    }


def _naive(rig: Rig) -> float:
    """Fetch NAIVE_COUNT messages one UID FETCH each; return msg/s."""
    mailbox = rig.mailboxes["a"]
    start = time.perf_counter()
    client = imaplib.IMAP4("127.0.0.1", rig.proxy.port, timeout=30)
    try:
        client.login(mailbox.address, mailbox.password)
        client.select("INBOX", readonly=True)
        _, data = client.uid("SEARCH", "ALL")
        for uid in data[0].split()[:NAIVE_COUNT]:
            client.uid("FETCH", uid, "(BODY.PEEK[])")
    finally:
        client.logout()
    return NAIVE_COUNT / (time.perf_counter() - start)
