"""Command-line interface: `flask --app app users|email|worker ...`."""

import signal
import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from posta import queue
from posta.models import Role

users_cli = AppGroup("users", help="Manage people.")
email_cli = AppGroup("email", help="Email add-on maintenance.")


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--name", default=None, help="Display name; defaults to the address.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="member")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def create_user(email, name, role, password_stdin):
    """Create a person for headless setups."""
    from posta.services import people

    if not password_stdin:
        raise click.UsageError("pass --password-stdin and pipe the password in")
    password = sys.stdin.readline().rstrip("\n")
    try:
        user = people.create_user(email=email, name=name, role=role, password=password)
    except people.PeopleError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {user.role} {user.email}")


@email_cli.command("sync")
@click.option(
    "--every",
    type=int,
    default=0,
    help="Repeat every N seconds instead of running once.",
)
def sync(every):
    """Enqueue one sync job per active account (in-process without Redis)."""
    if current_app.config["POSTA_JOBS"] == "thread":
        # A daemon thread would die with this process before finishing its work.
        current_app.config["POSTA_JOBS"] = "sync"
    while True:
        count = _enqueue_syncs()
        click.echo(f"queued sync for {count} account(s)")
        if not every:
            return
        time.sleep(every)


def _enqueue_syncs() -> int:
    from posta import jobs
    from posta.models import EmailAccount

    accounts = EmailAccount.syncable()
    for account in accounts:
        queue.enqueue(jobs.sync_account, account.id, job_id=f"sync-{account.id}")
    queue.enqueue(jobs.sweep_outgoing)
    return len(accounts)


@email_cli.command("watch")
@click.option(
    "--poll",
    "poll_seconds",
    type=float,
    default=30.0,
    help="Seconds between polls on servers without IDLE (or with --no-idle).",
)
@click.option("--no-idle", is_flag=True, help="Poll even where the server has IDLE.")
def watch(poll_seconds, no_idle):
    """Keep one IMAP session per account and import new mail as it arrives."""
    from posta.services.watch import Watcher

    watcher = Watcher(
        current_app._get_current_object(), poll_seconds, use_idle=not no_idle
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: watcher.stop())
    click.echo("watching; stop with Ctrl-C or SIGTERM")
    watcher.run()


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(burst):
    """Run an RQ worker that executes Posta's jobs inside the app."""
    from posta.worker import run_worker

    if current_app.config["POSTA_JOBS"] != "rq":
        raise click.ClickException("set FLASK_REDIS_URL to run a worker")
    run_worker(current_app._get_current_object(), burst=burst)


def register(app: Flask) -> None:
    """Attach the command groups to the app."""
    app.cli.add_command(users_cli)
    app.cli.add_command(email_cli)
    app.cli.add_command(worker)
