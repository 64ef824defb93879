"""The Email add-on's account settings, signatures and templates.

Registered inside the email blueprint, so its URLs share the Email app's rules:
404 while the app is off, 403 to guests.
"""

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user

from blueprints.access import email_required
from posta.extensions import db
from posta.ids import parse_id
from posta.models import (
    AccountGrant,
    EmailAccount,
    EmailTemplate,
    Signature,
    Task,
    User,
    Workspace,
)
from posta.services import permissions, plans, signatures, templates

bp = Blueprint("library", __name__)


@bp.app_context_processor
def inject_email_rules():
    """Let templates ask the rules what to show to the current person."""
    return {"email_rules": email_rules}


def email_rules() -> dict:
    """Return the plan facts and refusals the email pages explain."""
    ws = Workspace.get()
    return {
        "plan": plans.plan_of(ws),
        "uses_left": plans.uses_left(ws),
        "uses_refusal": permissions.uses_refusal(ws),
        "read_only": permissions.read_only_account_ids(ws),
        "add_from_settings": permissions.connect_refusal(
            current_user, ws, from_settings=True
        ),
        "add_from_task": permissions.connect_refusal(current_user, ws),
        "library": permissions.library_refusal(ws),
    }


def with_extras(composer: dict, task: Task, draft: dict) -> dict:
    """Add uses, signatures and templates to the composer; fill a chosen template."""
    rules = email_rules()
    composer.update(
        rules=rules, signatures=[], templates=[], signature_id=None, template_id=None
    )
    if rules["library"]:
        return composer
    ids = [account.id for account in composer["accounts"]]
    composer["signatures"] = Signature.for_accounts(ids)
    composer["signature_id"] = next(
        (
            s.id
            for s in composer["signatures"]
            if s.is_default and s.account_id == composer["account_id"]
        ),
        None,
    )
    composer["templates"] = EmailTemplate.ordered()
    chosen = db.session.get(EmailTemplate, _int(request.args.get("template")) or 0)
    if chosen is not None and not draft:
        composer.update(templates.fill(chosen, task, current_user))
        composer["subject"] = composer["subject"] or task.name
        composer["template_id"] = chosen.id
    return composer


@bp.get("/accounts/<int:account_id>/settings")
@email_required
def account_settings(account_id):
    """Show who may use an account, and its signatures."""
    account = db.get_or_404(EmailAccount, account_id)
    manage = permissions.may_manage(current_user, account)
    sign_refusal = permissions.signature_refusal(current_user, account)
    if not manage and sign_refusal:
        abort(403)
    return render_template(
        "email/account_settings.html",
        account=account,
        manage=manage,
        sign_refusal=sign_refusal,
        signatures=Signature.for_accounts([account.id]),
        people=[u for u in User.active_people() if not u.is_guest],
        grants={
            action: AccountGrant.user_ids(account.id, action)
            for action in permissions.ACTIONS
        },
        policies=permissions.POLICIES,
        read_only=account.id in email_rules()["read_only"],
    )


@bp.post("/accounts/<int:account_id>/permissions")
@email_required
def save_account_permissions(account_id):
    """Save who may send from an account and create its signatures and templates."""
    account = db.get_or_404(EmailAccount, account_id)
    form = request.form
    choices = {action: form.get(f"{action}_policy") for action in permissions.ACTIONS}
    chosen = {
        action: [_int(v) for v in form.getlist(f"{action}_people")]
        for action in permissions.ACTIONS
    }
    try:
        permissions.set_account_policies(current_user, account, choices, chosen)
    except permissions.PermissionDenied as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Permissions of %(address)s saved.", address=account.email), "success")
    return redirect(url_for(".account_settings", account_id=account.id))


@bp.post("/accounts/<int:account_id>/signatures")
@email_required
def create_signature(account_id):
    """Add a signature to an account."""
    account = db.get_or_404(EmailAccount, account_id)
    form = request.form
    try:
        signatures.create(
            current_user,
            account,
            form.get("name", ""),
            form.get("html", ""),
            make_default="default" in form,
        )
    except signatures.SignatureError as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Signature saved."), "success")
    return redirect(url_for(".account_settings", account_id=account.id))


@bp.post("/signatures/<int:signature_id>/default")
@email_required
def default_signature(signature_id):
    """Make a signature its account's default."""
    signature = db.get_or_404(Signature, signature_id)
    try:
        signatures.set_default(current_user, signature)
    except signatures.SignatureError as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Default signature changed."), "success")
    return redirect(url_for(".account_settings", account_id=signature.account_id))


@bp.post("/signatures/<int:signature_id>/delete")
@email_required
def delete_signature(signature_id):
    """Remove a signature."""
    signature = db.get_or_404(Signature, signature_id)
    account_id = signature.account_id
    try:
        signatures.delete(current_user, signature)
    except signatures.SignatureError as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Signature removed."), "success")
    return redirect(url_for(".account_settings", account_id=account_id))


@bp.get("/templates")
@email_required
def templates_page():
    """List the workspace's email templates, with the form to add one."""
    return _templates_page()


@bp.post("/templates")
@email_required
def create_template():
    """Add an email template."""
    form = request.form
    try:
        templates.create(
            current_user,
            form.get("name", ""),
            form.get("subject", ""),
            form.get("body", ""),
        )
    except templates.TemplateError as exc:
        flash(str(exc.message), "error")
        # Rendered, not redirected, so the rejected text is there to correct.
        return _templates_page(draft=form), 400
    flash(_("Template saved."), "success")
    return redirect(url_for(".templates_page"))


@bp.route("/templates/<int:template_id>/edit", methods=["GET", "POST"])
@email_required
def edit_template(template_id):
    """Change an email template."""
    template = db.get_or_404(EmailTemplate, template_id)
    if request.method == "GET":
        return _templates_page(draft=template, editing=template)
    form = request.form
    try:
        templates.update(
            current_user,
            template,
            form.get("name", ""),
            form.get("subject", ""),
            form.get("body", ""),
        )
    except templates.TemplateError as exc:
        flash(str(exc.message), "error")
        return _templates_page(draft=form, editing=template), 400
    flash(_("Template saved."), "success")
    return redirect(url_for(".templates_page"))


@bp.post("/templates/<int:template_id>/delete")
@email_required
def delete_template(template_id):
    """Remove an email template."""
    template = db.get_or_404(EmailTemplate, template_id)
    try:
        templates.delete(current_user, template)
    except templates.TemplateError as exc:
        flash(str(exc.message), "error")
    else:
        flash(_("Template removed."), "success")
    return redirect(url_for(".templates_page"))


@bp.get("/tasks/<int:task_id>/templates/<int:template_id>")
@email_required
def fill_template(task_id, template_id):
    """Return a template's subject and body filled from a task, as JSON."""
    task = db.get_or_404(Task, task_id)
    template = db.get_or_404(EmailTemplate, template_id)
    refusal = permissions.library_refusal(Workspace.get())
    if refusal:
        return jsonify(error=str(refusal)), 403
    return jsonify(templates.fill(template, task, current_user))


def _templates_page(draft=None, editing=None):
    ws = Workspace.get()
    return render_template(
        "email/templates.html",
        templates=EmailTemplate.ordered(),
        refusal=permissions.template_refusal(current_user),
        library_refusal=permissions.library_refusal(ws),
        placeholders=templates.PLACEHOLDERS,
        draft=draft,
        editing=editing,
    )


def _int(value) -> int | None:
    return parse_id(value)
