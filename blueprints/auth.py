"""First-run setup, log in and out, invitations and personal preferences."""

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from posta.extensions import db
from posta.models import User, Workspace
from posta.services import people

bp = Blueprint("auth", __name__)

OPEN_ENDPOINTS = {"auth.setup", "static"}


class SetupForm(FlaskForm):
    workspace_name = StringField(
        _l("Workspace name"), [DataRequired(), Length(max=120)]
    )
    name = StringField(_l("Your name"), [DataRequired(), Length(max=120)])
    email = EmailField(_l("Your email"), [DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), [DataRequired()])
    confirm = PasswordField(
        _l("Repeat password"),
        [DataRequired(), EqualTo("password", _l("The passwords do not match."))],
    )


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), [DataRequired()])
    password = PasswordField(_l("Password"), [DataRequired()])


class AcceptInviteForm(FlaskForm):
    name = StringField(_l("Your name"), [DataRequired(), Length(max=120)])
    password = PasswordField(_l("Password"), [DataRequired()])
    confirm = PasswordField(
        _l("Repeat password"),
        [DataRequired(), EqualTo("password", _l("The passwords do not match."))],
    )


class PreferencesForm(FlaskForm):
    name = StringField(_l("Name"), [DataRequired(), Length(max=120)])
    locale = SelectField(
        _l("Language"),
        choices=[
            SelectChoice("", _l("As my browser")),
            SelectChoice("en", "English"),
            SelectChoice("it", "Italiano"),
        ],
    )


@bp.before_app_request
def require_setup():
    """Send every request to first-run setup until the workspace exists."""
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None
    if Workspace.get() is None:
        return redirect(url_for("auth.setup"))
    return None


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """Create the workspace and its owner on first run."""
    if Workspace.get() is not None:
        return redirect(url_for("auth.login"))
    form = SetupForm()
    if form.validate_on_submit():
        try:
            owner = people.set_up_workspace(
                form.workspace_name.data,
                form.name.data,
                form.email.data,
                form.password.data,
            )
        except people.PeopleError as exc:
            flash(str(exc), "error")
        else:
            login_user(owner)
            flash(_l("Welcome to Posta. Create your first list to start."), "success")
            return redirect(url_for("tasks.index"))
    return render_template("auth/setup.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log a person in with email and password."""
    if current_user.is_authenticated:
        return redirect(url_for("tasks.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = User.by_email(form.email.data)
        if user and user.is_active and user.check_password(form.password.data):
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        flash(_l("Wrong email or password."), "error")
    return render_template("auth/login.html", form=form)


def _safe_next(target: str | None) -> str:
    """Follow ?next= only to a path on this site."""
    if target and target.startswith("/") and not urlsplit(target).netloc:
        if not target.startswith("//"):
            return target
    return url_for("tasks.index")


@bp.post("/logout")
@login_required
def logout():
    """Log the current person out."""
    logout_user()
    flash(_l("You are logged out."), "success")
    return redirect(url_for("auth.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invite(token):
    """Let an invited person choose a name and password."""
    invite = people.find_invite(token)
    if invite is None:
        abort(404)
    form = AcceptInviteForm()
    if form.validate_on_submit():
        try:
            user = people.accept_invite(token, form.name.data, form.password.data)
        except people.PeopleError as exc:
            flash(str(exc), "error")
        else:
            logout_user()
            login_user(user)
            return redirect(url_for("tasks.index"))
    return render_template("auth/accept_invite.html", form=form, invite=invite)


@bp.route("/preferences", methods=["GET", "POST"])
@login_required
def preferences():
    """Change one's name and language."""
    form = PreferencesForm(obj=current_user)
    if form.validate_on_submit():
        current_user.name = form.name.data.strip()
        current_user.locale = form.locale.data or None
        db.session.commit()
        flash(_l("Preferences saved."), "success")
        return redirect(url_for("auth.preferences"))
    return render_template("auth/preferences.html", form=form)
