"""Settings: the workspace plan and the email permissions of roles."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from blueprints.access import admin_required
from blueprints.settings import ROLE_LABELS
from posta.extensions import db
from posta.models import EmailAccount, Role, Workspace
from posta.services import permissions, plans

bp = Blueprint("plans", __name__, url_prefix="/settings")


@bp.get("/plan")
@admin_required
def plan():
    """Show the plans, what each allows and what this workspace uses."""
    ws = Workspace.get()
    return render_template(
        "settings/plan.html",
        plans=plans.PLANS.values(),
        current=plans.plan_of(ws),
        uses_left=plans.uses_left(ws),
        uses_used=ws.uses_used,
        account_count=db.session.scalar(select(func.count(EmailAccount.id))),
        read_only=len(permissions.read_only_account_ids(ws)),
        contacts_per_account=plans.CONTACTS_PER_ACCOUNT,
    )


@bp.post("/plan")
@admin_required
def change_plan():
    """Move the workspace to another plan."""
    if current_user.role != Role.OWNER:
        abort(403)
    try:
        chosen = plans.set_plan(Workspace.get(), request.form.get("plan", ""))
    except plans.PlanError as exc:
        flash(str(exc), "error")
    else:
        flash(_("The workspace is on %(plan)s.", plan=chosen.label), "success")
    return redirect(url_for("plans.plan"))


@bp.get("/permissions")
@admin_required
def permissions_page():
    """Show what admins and members may do with email."""
    ws = Workspace.get()
    return render_template(
        "settings/permissions.html",
        effective=permissions.role_summary(ws),
        refusal=permissions.role_permissions_refusal(current_user, ws),
        role_labels=ROLE_LABELS,
    )


@bp.post("/permissions")
@admin_required
def save_permissions():
    """Set what admins and members may do with email."""
    if current_user.role != Role.OWNER:
        abort(403)
    form = request.form
    choices = {
        role: (f"{role}_add" in form, f"{role}_send" in form)
        for role in (Role.ADMIN.value, Role.MEMBER.value)
    }
    try:
        permissions.set_role_permissions(current_user, Workspace.get(), choices)
    except permissions.PermissionDenied as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Email permissions saved."), "success")
    return redirect(url_for("plans.permissions_page"))
