"""A Posta instance for the bench: migrated SQLite DB, tasks, sent mails, accounts.

Each mailbox (keyed by corpus prefix) gets its own EmailAccount and TASKS tasks
in lists of LIST_SIZE, each task with the outgoing Message whose Message-ID the
corpus replies reference (bench.corpus.thread_id), so every reply belongs to a
task.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from flask_migrate import upgrade

from app import create_app
from bench import corpus
from posta.extensions import db
from posta.models import (
    Direction,
    EmailAccount,
    Message,
    Role,
    SendStatus,
    Task,
    TaskList,
    User,
    Workspace,
)

REPO = Path(__file__).resolve().parent.parent
OWNER = "owner@posta.test"
OWNER_PASSWORD = "bench horse battery staple"
SECRET_KEY = "bench-secret-key-not-for-production"
LIST_SIZE = 50


@dataclass
class Mailbox:
    """A mailbox on the bench servers, with the corpus prefix of its mail."""

    prefix: str
    address: str
    password: str


@dataclass
class Instance:
    """Where the instance lives and what was created in it."""

    root: Path
    accounts: dict[str, int] = field(default_factory=dict)
    heavy_task: dict[str, int] = field(default_factory=dict)
    heavy_list: dict[str, int] = field(default_factory=dict)

    @property
    def db_uri(self) -> str:
        """Return the SQLAlchemy URL of the instance's database."""
        return f"sqlite:///{self.root / 'posta.db'}"

    def config(self) -> dict:
        """Return the settings every process of the bench shares."""
        return {
            "SQLALCHEMY_DATABASE_URI": self.db_uri,
            "SECRET_KEY": SECRET_KEY,
            "POSTA_KEY_FILE": str(self.root / "encryption.key"),
            "POSTA_ATTACHMENTS_DIR": str(self.root / "attachments"),
        }

    def app(self, **overrides) -> Flask:
        """Create the app on this instance (jobs in-process unless overridden)."""
        config = {**self.config(), "POSTA_JOBS": "sync", **overrides}
        return create_app(config, instance_path=str(self.root))

    def env(self, **extra: str) -> dict:
        """Return the environment for `flask --app app` or gunicorn on this instance."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        env.update({f"FLASK_{k}": v for k, v in self.config().items()})
        env.update(extra)
        return env

    def copy(self, root: Path) -> "Instance":
        """Copy the database, keys and files to a new folder."""
        shutil.copytree(self.root, root)
        return Instance(root, self.accounts, self.heavy_task, self.heavy_list)


def create(root: Path, mailboxes: list[Mailbox], imap_port: int, smtp_port: int):
    """Migrate a new database under root and fill it; return the Instance."""
    root.mkdir(parents=True)
    instance = Instance(root)
    app = instance.app()
    with app.app_context():
        upgrade(directory=str(REPO / "migrations"))
        owner = _owner()
        for mailbox in mailboxes:
            account = _account(app, owner, mailbox, imap_port, smtp_port)
            tasks = _tasks(owner, account, mailbox)
            instance.accounts[mailbox.prefix] = account.id
            instance.heavy_task[mailbox.prefix] = tasks[0].id
            instance.heavy_list[mailbox.prefix] = tasks[0].list_id
        db.session.remove()
        db.engine.dispose()
    return instance


def _owner() -> User:
    # Two accounts and unlimited sending: the "business" plan.
    db.session.add(Workspace(name="Bench", email_enabled=True, plan="business"))
    owner = User(email=OWNER, name="Bench Owner", role=Role.OWNER.value)
    owner.set_password(OWNER_PASSWORD)
    db.session.add(owner)
    db.session.commit()
    return owner


def _account(app, owner, mailbox: Mailbox, imap_port, smtp_port) -> EmailAccount:
    account = EmailAccount(
        email=mailbox.address,
        display_name="Bench",
        connected_by_id=owner.id,
        username=mailbox.address,
        imap_host="127.0.0.1",
        imap_port=imap_port,
        imap_security="none",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_security="none",
        secret=app.extensions["posta_secrets"].encrypt(mailbox.password),
    )
    db.session.add(account)
    db.session.commit()
    return account


def _tasks(owner: User, account: EmailAccount, mailbox: Mailbox) -> list[Task]:
    """Create the tasks and the sent mail of each; return the tasks in order."""
    tasks = []
    for index in range(corpus.TASKS):
        if index % LIST_SIZE == 0:
            task_list = TaskList(name=f"{mailbox.prefix.upper()} {index // LIST_SIZE}")
        task = Task(name=f"Task {index} quote", task_list=task_list)
        sent_id = corpus.thread_id(index, mailbox.prefix)
        db.session.add(task)
        db.session.add(
            Message(
                account_id=account.id,
                task=task,
                direction=Direction.OUT.value,
                message_id=sent_id,
                dedupe_key=sent_id,
                subject=f"Task {index} quote",
                from_addr=account.email,
                from_name="Bench",
                to_addrs="Client <client@client.test>",
                text_body="Please find our quote.",
                status=SendStatus.SENT.value,
                created_by_id=owner.id,
            )
        )
        tasks.append(task)
    db.session.commit()
    return tasks
