"""The same migrations and models run on PostgreSQL by changing the database URL."""

import os
import secrets
from datetime import timedelta

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from app import create_app
from posta.extensions import db
from posta.models import EmailAccount, Message, Task, TaskList, User, utcnow
from posta.services import people

ADMIN_URL = os.environ.get(
    "POSTA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def pg_url():
    """Create a throwaway PostgreSQL database on loopback and drop it afterwards."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc.__class__.__name__}")
    name = "posta_test_" + secrets.token_hex(4)
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    conn.close()
    admin.dispose()


def test_migrations_and_core_paths_on_postgres(pg_url, tmp_path):
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": pg_url, "POSTA_JOBS": "sync"},
        instance_path=str(tmp_path),
    )
    with app.app_context():
        upgrade()
        owner = people.set_up_workspace("Acme", "Olga", "olga@example.test", "x" * 12)
        task_list = TaskList(name="Inbox")
        task = Task(task_list=task_list, name="Quote", created_by=owner)
        db.session.add_all([task_list, task])
        db.session.flush()
        account = EmailAccount(
            email="team@example.test", connected_by=owner, secret=b"\x00cipher"
        )
        db.session.add(account)
        db.session.flush()
        db.session.add(
            Message(
                account_id=account.id,
                task_id=task.id,
                direction="out",
                message_id="<a@example.test>",
                dedupe_key="<a@example.test>",
            )
        )
        db.session.commit()

        assert Message.task_for_references(["<x@y>", "<a@example.test>"]) == task.id
        until = utcnow() + timedelta(minutes=5)
        assert EmailAccount.acquire_sync_lease(account.id, until) is True
        assert EmailAccount.acquire_sync_lease(account.id, until) is False
        db.session.commit()
        assert User.by_email("OLGA@example.test").id == owner.id
        assert db.session.get(EmailAccount, account.id).sync_lease_until.tzinfo
        db.session.remove()
        db.engine.dispose()
