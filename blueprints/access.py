"""Role checks shared by the blueprints; the server, not the page, decides."""

from functools import wraps

from flask import abort
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from posta.models import Role, Workspace

ROLE_LABELS = {
    Role.OWNER: _l("Owner"),
    Role.ADMIN: _l("Admin"),
    Role.MEMBER: _l("Member"),
    Role.GUEST: _l("Guest"),
}


def admin_required(view):
    """Allow only the owner and admins."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def owner_required(view):
    """Allow only the owner."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if current_user.role != "owner":
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def email_required(view):
    """Answer 404 while the Email app is off and 403 to guests."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        workspace = Workspace.get()
        if workspace is None or not workspace.email_enabled:
            abort(404)
        if current_user.is_guest:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def email_visible() -> bool:
    """Tell templates whether to show anything about email to this person."""
    workspace = Workspace.get()
    return bool(
        workspace
        and workspace.email_enabled
        and current_user.is_authenticated
        and not current_user.is_guest
    )
