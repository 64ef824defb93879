"""Database models. Queries that pages and jobs share live here, on the models."""

import enum
from datetime import UTC, datetime

from flask import g, has_request_context
from flask_login import UserMixin
from sqlalchemy import DateTime, TypeDecorator, func, or_, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from posta.extensions import db


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that always reads back timezone-aware in UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    GUEST = "guest"


class Workspace(db.Model):
    """The one team this installation serves."""

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)
    email_enabled = db.Column(db.Boolean, nullable=False, default=False)
    plan = db.Column(db.String(32), nullable=False, default="free")
    # Emails sent from Posta; see posta.services.plans for when a use is counted.
    uses_used = db.Column(db.Integer, nullable=False, default=0)
    # Custom email permissions, read only on plans that have them.
    admin_may_add_accounts = db.Column(db.Boolean, nullable=False, default=True)
    admin_may_send = db.Column(db.Boolean, nullable=False, default=True)
    member_may_add_accounts = db.Column(db.Boolean, nullable=False, default=True)
    member_may_send = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    @classmethod
    def get(cls):
        """Return the workspace, or None before first-run setup; one query a request."""
        # Context processors and role checks each ask, several times a page.
        in_request = has_request_context()
        cached = g.get("posta_workspace") if in_request else None
        if cached is not None and cached in db.session:
            return cached
        found = db.session.scalars(select(cls).limit(1)).first()
        if in_request:
            g.posta_workspace = found
        return found


class User(UserMixin, db.Model):
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), nullable=False, unique=True)
    name = db.Column(db.String(120), nullable=False)
    password_hash = db.Column(db.String(256))
    role = db.Column(db.String(16), nullable=False, default=Role.MEMBER.value)
    locale = db.Column(db.String(8))
    active = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and check_password_hash(
            self.password_hash, password
        )

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.OWNER, Role.ADMIN)

    @property
    def is_guest(self) -> bool:
        return self.role == Role.GUEST

    @classmethod
    def by_email(cls, email: str):
        return db.session.scalars(
            select(cls).where(func.lower(cls.email) == email.strip().lower())
        ).first()

    @classmethod
    def active_people(cls):
        return db.session.scalars(
            select(cls).where(cls.active.is_(True)).order_by(cls.name)
        ).all()


class Invite(db.Model):
    """A pending invitation; only a hash of its link token is stored."""

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), nullable=False)
    role = db.Column(db.String(16), nullable=False)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    invited_by_id = db.Column(db.ForeignKey("user.id"), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False)
    accepted_at = db.Column(UTCDateTime)

    invited_by = db.relationship("User")


task_assignees = db.Table(
    "task_assignee",
    db.Column(
        "task_id", db.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True
    ),
    db.Column(
        "user_id", db.ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
    ),
)


class TaskList(db.Model):
    __tablename__ = "task_list"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    tasks = db.relationship(
        "Task", back_populates="task_list", order_by="Task.id", lazy="dynamic"
    )

    @classmethod
    def ordered(cls):
        return db.session.scalars(select(cls).order_by(cls.name)).all()


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class Task(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    list_id = db.Column(db.ForeignKey("task_list.id"), nullable=False, index=True)
    name = db.Column(db.String(200), nullable=False)
    description = db.Column(db.Text, nullable=False, default="")
    status = db.Column(db.String(16), nullable=False, default=TaskStatus.OPEN.value)
    due_date = db.Column(db.Date)
    created_by_id = db.Column(db.ForeignKey("user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    closed_at = db.Column(UTCDateTime)

    task_list = db.relationship("TaskList", back_populates="tasks")
    created_by = db.relationship("User")
    assignees = db.relationship("User", secondary=task_assignees, order_by="User.name")

    @property
    def reference(self) -> str:
        """Return the short reference put in outgoing subjects, e.g. T-42."""
        return f"T-{self.id}"

    @property
    def is_closed(self) -> bool:
        return self.status == TaskStatus.DONE


class Comment(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    task_id = db.Column(
        db.ForeignKey("task.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_id = db.Column(db.ForeignKey("user.id"), nullable=False)
    body = db.Column(db.Text, nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    author = db.relationship("User")


class AccountKind(enum.StrEnum):
    IMAP = "imap"
    GRAPH = "graph"
    EWS = "ews"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"
    DISABLED = "disabled"


class EmailAccount(db.Model):
    """A connected mailbox. Protocol settings depend on kind; secrets are encrypted."""

    __tablename__ = "email_account"

    id = db.Column(db.Integer, primary_key=True)
    kind = db.Column(db.String(16), nullable=False, default=AccountKind.IMAP.value)
    email = db.Column(db.String(254), nullable=False, unique=True)
    display_name = db.Column(db.String(120), nullable=False, default="")
    connected_by_id = db.Column(db.ForeignKey("user.id"), nullable=False)
    username = db.Column(db.String(254))
    imap_host = db.Column(db.String(253))
    imap_port = db.Column(db.Integer)
    imap_security = db.Column(db.String(16))
    smtp_host = db.Column(db.String(253))
    smtp_port = db.Column(db.Integer)
    smtp_security = db.Column(db.String(16))
    secret = db.Column(db.LargeBinary)
    send_policy = db.Column(db.String(16), nullable=False, default="only_me")
    signature_policy = db.Column(db.String(16), nullable=False, default="only_me")
    template_policy = db.Column(db.String(16), nullable=False, default="only_me")
    status = db.Column(
        db.String(24), nullable=False, default=AccountStatus.ACTIVE.value
    )
    sync_lease_until = db.Column(UTCDateTime)
    last_sync_at = db.Column(UTCDateTime)
    last_sync_result = db.Column(db.String(200))
    last_error = db.Column(db.String(500))
    # Microsoft accounts: personal (outlook.com and co.) or work/school.
    personal = db.Column(db.Boolean)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    connected_by = db.relationship("User")
    folders = db.relationship(
        "MailFolder", back_populates="account", cascade="all, delete-orphan"
    )

    @classmethod
    def any_connected(cls) -> bool:
        return db.session.scalar(select(cls.id).limit(1)) is not None

    @classmethod
    def syncable(cls):
        return db.session.scalars(
            select(cls).where(cls.status == AccountStatus.ACTIVE).order_by(cls.id)
        ).all()

    @classmethod
    def acquire_sync_lease(cls, account_id: int, until: datetime) -> bool:
        """Claim the account's sync slot; False when another sync holds it."""
        now = utcnow()
        result = db.session.execute(
            update(cls)
            .where(cls.id == account_id)
            .where(or_(cls.sync_lease_until.is_(None), cls.sync_lease_until < now))
            .values(sync_lease_until=until)
        )
        return result.rowcount == 1


class MailFolder(db.Model):
    """The sync cursor of one remote folder."""

    __tablename__ = "mail_folder"
    __table_args__ = (db.UniqueConstraint("account_id", "name"),)

    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(
        db.ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False
    )
    name = db.Column(db.String(255), nullable=False)
    uidvalidity = db.Column(db.BigInteger)
    uidnext = db.Column(db.BigInteger)
    last_uid = db.Column(db.BigInteger, nullable=False, default=0)
    delta_link = db.Column(db.Text)
    # Where an unfinished Graph delta pass resumes (it was throttled or cut short).
    next_link = db.Column(db.Text)
    last_error = db.Column(db.String(500))
    last_synced_at = db.Column(UTCDateTime)

    account = db.relationship("EmailAccount", back_populates="folders")


class Direction(enum.StrEnum):
    OUT = "out"
    IN = "in"


class SendStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Message(db.Model):
    """An email on a task: one we send (outgoing queue row) or one we received."""

    __table_args__ = (
        db.UniqueConstraint("account_id", "dedupe_key"),
        # Covers a task's stream order and its latest mail, which would otherwise
        # read every row of the task, bodies and all.
        db.Index(
            "ix_message_task_time", "task_id", "created_at", "sent_date", "direction"
        ),
    )

    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(
        db.ForeignKey("email_account.id", ondelete="SET NULL"), index=True
    )
    task_id = db.Column(db.ForeignKey("task.id", ondelete="CASCADE"))
    direction = db.Column(db.String(3), nullable=False)
    message_id = db.Column(db.String(998), index=True)
    dedupe_key = db.Column(db.String(998), nullable=False)
    in_reply_to = db.Column(db.String(998))
    references = db.Column(db.Text, nullable=False, default="")
    subject = db.Column(db.String(998), nullable=False, default="")
    from_addr = db.Column(db.String(254), nullable=False, default="")
    from_name = db.Column(db.String(254), nullable=False, default="")
    to_addrs = db.Column(db.Text, nullable=False, default="")
    cc_addrs = db.Column(db.Text, nullable=False, default="")
    bcc_addrs = db.Column(db.Text, nullable=False, default="")
    text_body = db.Column(db.Text, nullable=False, default="")
    html_body = db.Column(db.Text)
    sent_date = db.Column(UTCDateTime)
    status = db.Column(db.String(16))
    error = db.Column(db.String(500))
    attempts = db.Column(db.Integer, nullable=False, default=0)
    # True while this outgoing message holds one of the workspace's uses.
    counted_use = db.Column(db.Boolean, nullable=False, default=False)
    claimed_at = db.Column(UTCDateTime)
    folder = db.Column(db.String(255))
    uid = db.Column(db.BigInteger)
    defects = db.Column(db.Text, nullable=False, default="")
    # Graph's ids: the item in the mailbox and its Exchange conversation.
    remote_id = db.Column(db.String(255))
    conversation_id = db.Column(db.String(255), index=True)
    # Outlook's Thread-Index: as received, or the one we sent (which extends it).
    thread_index = db.Column(db.String(255))
    # Why a received message is on its task; see posta.services.linking.
    link_reason = db.Column(db.String(16))
    # Who moved it there, for "moved" and "split".
    linked_by_id = db.Column(db.ForeignKey("user.id", ondelete="SET NULL"))
    # Machine mail: "auto_reply" or "bounce" (posta.mail.autoreply).
    auto_kind = db.Column(db.String(16))
    created_by_id = db.Column(db.ForeignKey("user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    account = db.relationship("EmailAccount")
    task = db.relationship("Task")
    created_by = db.relationship("User", foreign_keys=[created_by_id])
    linked_by = db.relationship("User", foreign_keys=[linked_by_id])
    attachments = db.relationship(
        "Attachment",
        back_populates="message",
        cascade="all, delete-orphan",
        order_by="Attachment.id",
    )

    @classmethod
    def task_for_references(cls, ids: list[str]):
        """Return the task id of the first referenced message that is on a task."""
        by_id = cls.tasks_by_message_id(ids)
        return next((by_id[i] for i in ids if i in by_id), None)

    @classmethod
    def tasks_by_message_id(cls, ids) -> dict[str, int]:
        """Map each of these Message-IDs that is on a task to that task's id."""
        ids = sorted(set(ids))
        by_id: dict[str, int] = {}
        # Chunked: one IN list per header batch could pass SQLite's variable limit.
        for start in range(0, len(ids), 500):
            by_id.update(
                db.session.execute(
                    select(cls.message_id, cls.task_id)
                    .where(cls.message_id.in_(ids[start : start + 500]))
                    .where(cls.task_id.is_not(None))
                ).all()
            )
        return by_id

    @classmethod
    def task_for_conversation(cls, account_id: int, conversation_id: str | None):
        """Return the task of a message Posta sent in this Graph conversation."""
        if not conversation_id:
            return None
        return db.session.scalars(
            select(cls.task_id)
            .where(
                cls.account_id == account_id,
                cls.conversation_id == conversation_id,
                cls.direction == Direction.OUT,
                cls.task_id.is_not(None),
            )
            .order_by(cls.id.desc())
            .limit(1)
        ).first()


class Attachment(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    message_id = db.Column(
        db.ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True
    )
    filename = db.Column(db.String(255), nullable=False)
    content_type = db.Column(db.String(255), nullable=False)
    size = db.Column(db.Integer, nullable=False)
    storage_key = db.Column(db.String(255), nullable=False)
    content_id = db.Column(db.String(255))
    inline = db.Column(db.Boolean, nullable=False, default=False)

    message = db.relationship("Message", back_populates="attachments")


class Contact(db.Model):
    """A workspace address the composer suggests, imported from a mailbox."""

    id = db.Column(db.Integer, primary_key=True)
    address = db.Column(db.String(254), nullable=False, unique=True)
    name = db.Column(db.String(254), nullable=False, default="")
    source_account_id = db.Column(
        db.ForeignKey("email_account.id", ondelete="SET NULL"), index=True
    )
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    source_account = db.relationship("EmailAccount")

    @classmethod
    def suggestions(cls, limit: int = 500):
        return db.session.scalars(
            select(cls).order_by(cls.name, cls.address).limit(limit)
        ).all()


class AccountGrant(db.Model):
    """A person chosen by name for one action on one account."""

    __tablename__ = "account_grant"
    __table_args__ = (db.UniqueConstraint("account_id", "user_id", "action"),)

    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(
        db.ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False
    )
    user_id = db.Column(db.ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    action = db.Column(db.String(16), nullable=False)

    @classmethod
    def user_ids(cls, account_id: int, action: str) -> set[int]:
        return set(
            db.session.scalars(
                select(cls.user_id).where(
                    cls.account_id == account_id, cls.action == action
                )
            )
        )


class Signature(db.Model):
    """A signature of one account, appended below the body of an email."""

    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(
        db.ForeignKey("email_account.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    name = db.Column(db.String(120), nullable=False)
    html = db.Column(db.Text, nullable=False)
    text = db.Column(db.Text, nullable=False)
    is_default = db.Column(db.Boolean, nullable=False, default=False)
    created_by_id = db.Column(db.ForeignKey("user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    account = db.relationship("EmailAccount")

    @classmethod
    def for_accounts(cls, account_ids):
        return db.session.scalars(
            select(cls)
            .where(cls.account_id.in_(list(account_ids)))
            .order_by(cls.account_id, cls.name, cls.id)
        ).all()


class EmailTemplate(db.Model):
    """A workspace's reusable subject and body, with task placeholders."""

    __tablename__ = "email_template"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)
    subject = db.Column(db.String(998), nullable=False, default="")
    body = db.Column(db.Text, nullable=False, default="")
    created_by_id = db.Column(db.ForeignKey("user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    created_by = db.relationship("User")

    @classmethod
    def ordered(cls):
        return db.session.scalars(select(cls).order_by(cls.name, cls.id)).all()
