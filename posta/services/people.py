"""First-run setup, people and invitations."""

import hashlib
import secrets
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from posta.extensions import db
from posta.models import Invite, Role, User, Workspace, utcnow

MIN_PASSWORD = 8


class PeopleError(ValueError):
    """A request about people that cannot be carried out, with a message for them."""


def normalize_email(email: str) -> str:
    """Return a syntactically valid, normalized address or raise PeopleError."""
    try:
        # Self-hosted teams use internal and test domains: check syntax only.
        return validate_email(
            email.strip(),
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        ).normalized
    except EmailNotValidError as exc:
        raise PeopleError(_l("That email address is not valid.")) from exc


def check_password(password: str) -> None:
    """Refuse passwords too short to be safe."""
    if len(password) < MIN_PASSWORD:
        raise PeopleError(
            _l("Use at least %(n)d characters for the password.", n=MIN_PASSWORD)
        )


def set_up_workspace(workspace_name, owner_name, owner_email, password) -> User:
    """Create the workspace and its owner on first run."""
    if Workspace.get() is not None:
        raise PeopleError(_l("This workspace is already set up."))
    owner = _new_user(owner_email, owner_name, Role.OWNER.value, password)
    db.session.add(Workspace(name=workspace_name.strip()))
    db.session.commit()
    return owner


def create_user(email, name, role, password) -> User:
    """Create a person directly, as the headless CLI does."""
    if role == Role.OWNER and _owner_exists():
        raise PeopleError(_l("This workspace already has an owner."))
    user = _new_user(email, name or email, role, password)
    db.session.commit()
    return user


def _new_user(email, name, role, password) -> User:
    email = normalize_email(email)
    check_password(password)
    if User.by_email(email):
        raise PeopleError(_l("Someone with that email address already exists."))
    user = User(email=email, name=(name or email).strip(), role=role)
    user.set_password(password)
    db.session.add(user)
    return user


def _owner_exists() -> bool:
    return db.session.scalars(select(User).where(User.role == Role.OWNER)).first()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(inviter: User, email: str, role: str, days: int) -> str:
    """Create an invitation and return the secret token for its link."""
    if role not in (Role.ADMIN, Role.MEMBER, Role.GUEST):
        raise PeopleError(_l("Invite people as admin, member or guest."))
    if role == Role.ADMIN and inviter.role != Role.OWNER:
        raise PeopleError(_l("Only the owner can invite admins."))
    email = normalize_email(email)
    if User.by_email(email):
        raise PeopleError(_l("Someone with that email address already exists."))

    token = secrets.token_urlsafe(32)
    db.session.add(
        Invite(
            email=email,
            role=role,
            token_hash=_hash(token),
            invited_by_id=inviter.id,
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    db.session.commit()
    return token


def find_invite(token: str) -> Invite | None:
    """Return the open, unexpired invitation for a token, if any."""
    found = db.session.scalars(
        select(Invite).where(Invite.token_hash == _hash(token))
    ).first()
    if found is None or found.accepted_at is not None:
        return None
    return found if found.expires_at > utcnow() else None


def accept_invite(token: str, name: str, password: str) -> User:
    """Turn an invitation into a person with the password they chose."""
    found = find_invite(token)
    if found is None:
        raise PeopleError(_l("This invitation link is no longer valid."))
    user = _new_user(found.email, name, found.role, password)
    found.accepted_at = utcnow()
    db.session.commit()
    return user


def pending_invites() -> list[Invite]:
    """Return invitations not yet accepted, newest first."""
    return db.session.scalars(
        select(Invite).where(Invite.accepted_at.is_(None)).order_by(Invite.id.desc())
    ).all()


def change_role(actor: User, user: User, role: str) -> None:
    """Change someone's role; the owner's role never changes here."""
    if user.role == Role.OWNER or role == Role.OWNER:
        raise PeopleError(_l("The owner's role cannot be changed here."))
    if role == Role.ADMIN and actor.role != Role.OWNER:
        raise PeopleError(_l("Only the owner can make someone an admin."))
    if role not in (Role.ADMIN, Role.MEMBER, Role.GUEST):
        raise PeopleError(_l("Unknown role."))
    user.role = role
    db.session.commit()
