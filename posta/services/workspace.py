"""Workspace settings: apps, people's access and pending invitations."""

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from posta.extensions import db
from posta.models import Invite, Role, User, Workspace
from posta.services import people
from posta.services.people import PeopleError


def set_email_enabled(workspace: Workspace, enabled: bool) -> None:
    """Turn the Email app on or off for everyone."""
    workspace.email_enabled = enabled
    db.session.commit()


def everyone() -> list[User]:
    """Return all people, active or not, by name."""
    return db.session.scalars(select(User).order_by(User.name, User.id)).all()


def change_role(actor: User, user: User, role: str) -> None:
    """Change someone's role; only the owner manages admins."""
    _check_manages(actor, user)
    people.change_role(actor, user, role)


def set_active(actor: User, user: User, active: bool) -> None:
    """Deactivate or reactivate someone other than the owner and oneself."""
    if user.role == Role.OWNER:
        raise PeopleError(_l("The owner cannot be deactivated."))
    if user.id == actor.id:
        raise PeopleError(_l("You cannot deactivate or reactivate yourself."))
    _check_manages(actor, user)
    user.active = active
    db.session.commit()


def revoke_invite(invite: Invite) -> None:
    """Withdraw a pending invitation so its link stops working."""
    if invite.accepted_at is not None:
        raise PeopleError(_l("That invitation was already accepted."))
    db.session.delete(invite)
    db.session.commit()


def _check_manages(actor: User, user: User) -> None:
    # Admins run the team day to day; they must not lock each other out.
    if user.role == Role.ADMIN and actor.role != Role.OWNER:
        raise PeopleError(_l("Only the owner can change an admin's access."))
