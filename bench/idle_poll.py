"""Bench 2: what a poll of an unchanged mailbox costs, counted in the proxy.

Three pollers, POLLS polls each, on the imported mailbox "a":
- Posta's job (jobs.sync_account in a child process): today every job opens a
  connection, so a poll is connect + LOGIN + EXAMINE + LOGOUT;
- Posta's per-folder pass (posta.mail.sync.sync_folder) in one open session;
- the peer: `UID SEARCH ALL` in one open session with INBOX selected.
CPU per poll is the child's process time for the job, and the polling thread's
own time in-process (the proxy runs on another thread).
"""

import imaplib
import time

from sqlalchemy import select

from bench.rig import Rig
from bench.table import Row
from posta.extensions import db
from posta.mail.imap import ImapSession, ImapSettings
from posta.mail.sync import FolderState, sync_folder
from posta.models import MailFolder

NAME = "idle"
POLLS = 100


def run(rig: Rig) -> list[Row]:
    """Measure the three pollers and return the rows."""
    rig.ensure_imported()
    job = _job_polls(rig)
    folder = _session_polls(rig)
    search = _search_all_polls(rig)
    peer = "UID SEARCH ALL, open session"
    return [
        Row(
            NAME,
            "round trips/poll, job (connect+LOGIN+EXAMINE+LOGOUT)",
            job["rt"],
            "RT",
            search["rt"],
            peer,
            "1 per folder",
            job["rt"] <= 1,
        ),
        Row(
            NAME,
            "round trips/poll, folder pass in open session",
            folder["rt"],
            "RT",
            search["rt"],
            peer,
            "1 per folder",
            folder["rt"] <= 1,
        ),
        Row(NAME, "bytes/poll, job", job["bytes"], "B", search["bytes"], peer),
        Row(
            NAME,
            "bytes/poll, folder pass in open session",
            folder["bytes"],
            "B",
            search["bytes"],
            peer,
        ),
        Row(NAME, "wall/poll, job", job["wall"], "ms", search["wall"], peer),
        Row(
            NAME,
            "CPU/poll, job (whole job process)",
            job["cpu"],
            "ms",
            search["cpu"],
            peer,
            "<= 10 ms",
            job["cpu"] <= 10,
        ),
        Row(
            NAME,
            "CPU/poll, folder pass in open session",
            folder["cpu"],
            "ms",
            search["cpu"],
            peer,
            "<= 10 ms",
            folder["cpu"] <= 10,
        ),
    ]


def _job_polls(rig: Rig) -> dict:
    """Run the sync job POLLS times in a child on the up-to-date account."""
    rig.proxy.reset()
    figures, _ = rig.run_import("a", "--repeat", str(POLLS))
    counters = rig.proxy.reset()
    if figures["added"]:
        raise RuntimeError("the idle mailbox was not idle")
    return {
        "rt": counters.round_trips / POLLS,
        "bytes": counters.bytes_total / POLLS,
        "wall": figures["wall"] * 1000 / POLLS,
        "cpu": figures["cpu"] * 1000 / POLLS,
    }


def _session_polls(rig: Rig) -> dict:
    """Run Posta's folder pass POLLS times in one open session."""
    mailbox = rig.mailboxes["a"]
    settings = ImapSettings(
        "127.0.0.1", rig.proxy.port, "none", mailbox.address, mailbox.password
    )
    state = _stored_state(rig)
    with ImapSession(settings) as session:
        return _measure(rig, lambda: list(sync_folder(session, state, _nothing)))


def _search_all_polls(rig: Rig) -> dict:
    """Run `UID SEARCH ALL` POLLS times in one open session."""
    mailbox = rig.mailboxes["a"]
    client = imaplib.IMAP4("127.0.0.1", rig.proxy.port, timeout=30)
    try:
        client.login(mailbox.address, mailbox.password)
        client.select("INBOX", readonly=True)
        return _measure(rig, lambda: client.uid("SEARCH", "ALL"))
    finally:
        client.logout()


def _measure(rig: Rig, poll) -> dict:
    """Call poll POLLS times; return per-poll round trips, bytes, wall, CPU."""
    rig.proxy.reset()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(POLLS):
        poll()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    counters = rig.proxy.reset()
    return {
        "rt": counters.round_trips / POLLS,
        "bytes": counters.bytes_total / POLLS,
        "wall": wall * 1000 / POLLS,
        "cpu": cpu * 1000 / POLLS,
    }


def _stored_state(rig: Rig) -> FolderState:
    """Return the INBOX cursor Posta stored for account "a"."""
    with rig.instance.app().app_context():
        row = db.session.scalars(
            select(MailFolder).where(
                MailFolder.account_id == rig.instance.accounts["a"],
                MailFolder.name == "INBOX",
            )
        ).one()
        state = FolderState("INBOX", row.uidvalidity, row.last_uid, row.uidnext)
        db.session.remove()
    return state


def _nothing(headers) -> set[int]:
    return set()
