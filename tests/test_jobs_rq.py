"""Jobs through a private Redis and real `flask worker --burst` processes."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from posta import jobs, queue
from posta.extensions import db
from posta.mail.compose import make_message_id
from posta.models import Message, Role
from posta.services import outgoing
from tests.email_support import make_task, messages_on, reply_to
from tests.fixtures.servers import _wait_for_port, free_port

REPO = Path(__file__).resolve().parent.parent
FLASK = str(Path(sys.executable).parent / "flask")


@pytest.fixture
def redis_url():
    """Start a private, diskless Redis on a free loopback port."""
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def app_config(redis_url):
    return {"POSTA_JOBS": "rq", "REDIS_URL": redis_url}


@pytest.fixture
def member(make_user, email_on):
    return make_user(Role.MEMBER)


def flask_env(app, **extra) -> dict:
    """Point a `flask --app app` process at this test's database, key and files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(
        FLASK_SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
        FLASK_POSTA_KEY_FILE=app.config["POSTA_KEY_FILE"],
        FLASK_POSTA_ATTACHMENTS_DIR=app.config["POSTA_ATTACHMENTS_DIR"],
    )
    env.update(extra)
    return env


def start_worker(app) -> subprocess.Popen:
    env = flask_env(app, FLASK_REDIS_URL=app.config["REDIS_URL"])
    return subprocess.Popen(
        [FLASK, "--app", "app", "worker", "--burst"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_worker(app) -> str:
    worker = start_worker(app)
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    return output


def sent_message(task, account) -> Message:
    """Record an email as already sent from the task, for replies to point at."""
    message_id = make_message_id("posta.test")
    message = Message(
        account_id=account.id,
        task_id=task.id,
        direction="out",
        message_id=message_id,
        dedupe_key=message_id,
        subject=task.name,
        from_addr=account.email,
        to_addrs="rossi@client.test",
        status="sent",
    )
    db.session.add(message)
    db.session.commit()
    return message


def test_queued_send_is_delivered_once_by_a_worker(member, account, smtp, app):
    task = make_task()
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Via RQ", []
    )
    assert message.status == "queued"
    assert smtp.messages == []
    # A duplicate nudge (as the sweeper may add) must not send twice.
    queue.enqueue(jobs.send_message, message.id)

    output = run_worker(app)
    assert "job send_message" in output
    assert len(smtp.messages) == 1
    assert b"Via RQ" in smtp.messages[0][2]
    [message] = messages_on(task)
    assert (message.status, message.attempts) == ("sent", 1)


def test_sync_job_imports_a_reply(account, mailbox, app):
    task = make_task()
    original = sent_message(task, account)
    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="Reply via RQ")
    )
    queue.enqueue(jobs.sync_account, account.id)
    output = run_worker(app)
    assert "sync finished, 1 new" in output
    texts = [m.text_body for m in messages_on(task)]
    assert "Reply via RQ" in texts[-1]
    assert len(texts) == 2


class GateProxy:
    """A loopback TCP proxy that holds connections until opened."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.gate = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.connected.set()
                threading.Thread(
                    target=self._serve, args=(client,), daemon=True
                ).start()

    def _serve(self, client) -> None:
        self.gate.wait()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_two_sync_jobs_for_one_account_never_overlap(account, mailbox, app):
    task = make_task()
    original = sent_message(task, account)
    mailbox.dovecot.deliver(mailbox.address, reply_to(original.message_id))
    proxy = GateProxy(mailbox.dovecot.port)
    account.imap_port = proxy.port
    db.session.commit()
    try:
        queue.enqueue(jobs.sync_account, account.id)
        first = start_worker(app)
        # The first sync holds the lease while its IMAP connection waits at the gate.
        assert proxy.connected.wait(60)
        queue.enqueue(jobs.sync_account, account.id)
        second = run_worker(app)
        assert "another sync holds the lease; skipped" in second
        assert len(messages_on(task)) == 1
        proxy.gate.set()
        output, _ = first.communicate(timeout=120)
    finally:
        proxy.close()
    assert first.returncode == 0, output
    assert "sync finished, 1 new" in output
    assert len(messages_on(task)) == 2


def test_email_sync_command_without_redis_runs_in_process(account, mailbox, app):
    task = make_task()
    original = sent_message(task, account)
    mailbox.dovecot.deliver(
        mailbox.address, reply_to(original.message_id, text="Synced by cron")
    )
    result = subprocess.run(
        [FLASK, "--app", "app", "email", "sync"],
        cwd=REPO,
        env=flask_env(app),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "queued sync for 1 account(s)" in result.stdout
    texts = [m.text_body for m in messages_on(task)]
    assert "Synced by cron" in texts[-1]
