"""Settings: apps, people and invitations, email integration."""

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectChoice, SelectField

from blueprints.access import ROLE_LABELS, admin_required, email_visible
from posta.extensions import db
from posta.models import Invite, Role, User, Workspace, utcnow
from posta.services import people, workspace

bp = Blueprint("settings", __name__, url_prefix="/settings")


class AppsForm(FlaskForm):
    email_enabled = BooleanField(_l("Email app"))


# Roles are checked by the people services, which explain a refusal in words.
class InviteForm(FlaskForm):
    email = EmailField(_l("Email"))
    role = SelectField(_l("Role"), validate_choice=False)


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), validate_choice=False)


@bp.get("/")
@login_required
def index():
    """Show the settings sections this person may open."""
    return render_template("settings/index.html", email_url=_email_settings_url())


@bp.route("/apps", methods=["GET", "POST"])
@admin_required
def apps():
    """Turn the Email app on or off."""
    ws = Workspace.get()
    form = AppsForm(obj=ws)
    if form.validate_on_submit():
        workspace.set_email_enabled(ws, form.email_enabled.data)
        if form.email_enabled.data:
            flash(_("The Email app is on."), "success")
        else:
            flash(_("The Email app is off."), "success")
        return redirect(url_for("settings.apps"))
    return render_template("settings/apps.html", form=form)


@bp.get("/people")
@admin_required
def people_page():
    """List people and pending invitations, with the forms to manage them."""
    return _people_page()


@bp.post("/people/invite")
@admin_required
def invite():
    """Invite someone and show the link once, since Posta sends no email."""
    form = InviteForm()
    form.role.choices = _assignable_roles()
    if form.validate_on_submit():
        days = current_app.config["POSTA_INVITE_DAYS"]
        try:
            token = people.invite(current_user, form.email.data, form.role.data, days)
        except people.PeopleError as exc:
            flash(str(exc), "error")
        else:
            link = url_for("auth.accept_invite", token=token, _external=True)
            # Rendered, not redirected: the token must not travel in a cookie.
            response = current_app.make_response(_people_page(invite_link=link))
            response.headers["Cache-Control"] = "no-store"
            return response
    return redirect(url_for("settings.people_page"))


@bp.post("/invites/<int:invite_id>/revoke")
@admin_required
def revoke_invite(invite_id):
    """Withdraw a pending invitation."""
    found = db.get_or_404(Invite, invite_id)
    try:
        workspace.revoke_invite(found)
    except people.PeopleError as exc:
        flash(str(exc), "error")
    else:
        flash(_("Invitation revoked; its link no longer works."), "success")
    return redirect(url_for("settings.people_page"))


@bp.post("/people/<int:user_id>/role")
@admin_required
def change_role(user_id):
    """Change someone's role."""
    user = db.get_or_404(User, user_id)
    form = RoleForm()
    if form.validate_on_submit():
        try:
            workspace.change_role(current_user, user, form.role.data)
        except people.PeopleError as exc:
            flash(str(exc), "error")
        else:
            message = _("%(name)s is now %(role)s.", name=user.name, role=_role(user))
            flash(message, "success")
    return redirect(url_for("settings.people_page"))


@bp.post("/people/<int:user_id>/deactivate")
@admin_required
def deactivate(user_id):
    """Stop someone from logging in, keeping their work."""
    return _set_active(user_id, False)


@bp.post("/people/<int:user_id>/reactivate")
@admin_required
def reactivate(user_id):
    """Let a deactivated person log in again."""
    return _set_active(user_id, True)


def _set_active(user_id: int, active: bool):
    user = db.get_or_404(User, user_id)
    try:
        workspace.set_active(current_user, user, active)
    except people.PeopleError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.people_page"))
    if active:
        flash(_("%(name)s is active again.", name=user.name), "success")
    else:
        flash(_("%(name)s is deactivated.", name=user.name), "success")
    return redirect(url_for("settings.people_page"))


def _people_page(invite_link: str | None = None) -> str:
    form = InviteForm(formdata=None, role=Role.MEMBER.value)
    form.role.choices = _assignable_roles()
    return render_template(
        "settings/people.html",
        people=workspace.everyone(),
        invites=people.pending_invites(),
        form=form,
        roles=_assignable_roles(),
        invite_link=invite_link,
        now=utcnow(),
    )


def _assignable_roles() -> list[SelectChoice]:
    roles = [Role.MEMBER, Role.GUEST]
    if current_user.role == Role.OWNER:
        roles.insert(0, Role.ADMIN)
    return [SelectChoice(r.value, ROLE_LABELS[r]) for r in roles]


def _role(user: User) -> str:
    return str(ROLE_LABELS.get(user.role, user.role))


def _email_settings_url() -> str | None:
    """Return the Email Integration page's address when this person may see it."""
    if not email_visible():
        return None
    # The Email blueprint may not define its settings page yet.
    if "email.integration" in current_app.view_functions:
        return url_for("email.integration")
    return "/email/settings"
