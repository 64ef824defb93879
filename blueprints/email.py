"""The Email add-on's pages: connect accounts, send from tasks, show mail."""

import email.utils
import re
from urllib.parse import unquote

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField

from blueprints import email_library
from blueprints.access import email_required
from posta import jobs, queue
from posta.extensions import db
from posta.ids import parse_id
from posta.mail.sanitize import has_remote_images, show_remote_images
from posta.models import (
    Attachment,
    Direction,
    EmailAccount,
    Message,
    Task,
    User,
    Workspace,
)
from posta.services import accounts, linking, outgoing, permissions, storage

bp = Blueprint("email", __name__, url_prefix="/email")
bp.register_blueprint(email_library.bp)

SECURITY_LABELS = [
    SelectChoice("ssl", _l("SSL/TLS")),
    SelectChoice("starttls", _l("STARTTLS")),
    SelectChoice("none", _l("None (unencrypted)")),
]
ADD_NEW = "add-new"
DRAFT_KEY = "email_draft"
DRAFT_FIELDS = ("account_id", "to", "cc", "bcc", "subject", "body")
# The session is a cookie: browsers drop cookies over 4 KB, logging the person out.
MAX_DRAFT_CHARS = 2000
# Sanitized mail HTML is still foreign content: no scripts, no origin, and no
# network but its own inline images; links may open (unsandboxed) new tabs.
_BODY_BASE = "default-src 'none'; style-src 'unsafe-inline'; "
_BODY_SANDBOX = "sandbox allow-popups allow-popups-to-escape-sandbox"
BODY_CSP = f"{_BODY_BASE}img-src 'self' data:; {_BODY_SANDBOX}"
# With "Show images", for that one response.
BODY_CSP_IMAGES = f"{_BODY_BASE}img-src 'self' data: https: http:; {_BODY_SANDBOX}"
# Raster types only: an SVG is a document that can carry script.
INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
_CID_SRC = re.compile(r'(\ssrc=")cid:([^"]*)"', re.IGNORECASE)
MOVE_CHOICES = 50
# How long the image links of a rendered body keep working.
INLINE_URL_SECONDS = 3600


# The service owns validation, so its messages are the ones people see; the form
# only reads fields and carries the CSRF token.
class ExchangeForm(FlaskForm):
    email = EmailField(_l("Email address"))
    password = PasswordField(_l("Password or app password"))
    username = StringField(_l("Username, if it is not the email address"))
    imap_host = StringField(_l("IMAP server"))
    imap_port = StringField(_l("Port"), default="993")
    imap_security = SelectField(
        _l("Security"), choices=SECURITY_LABELS, default="ssl", validate_choice=False
    )
    smtp_host = StringField(_l("SMTP server"))
    smtp_port = StringField(_l("Port"), default="587")
    smtp_security = SelectField(
        _l("Security"),
        choices=SECURITY_LABELS,
        default="starttls",
        validate_choice=False,
    )


@bp.app_context_processor
def inject_email_helpers():
    """Let the task page's templates build the composer and Retry buttons."""
    return {
        "email_composer": email_composer,
        "email_may_send": _may_send,
        "email_move_targets": _move_targets,
        "email_remote_images": has_remote_images,
    }


def email_composer(task: Task) -> dict:
    """Return what the composer on a task page needs, for the current person."""
    draft = session.pop(DRAFT_KEY, None) or {}
    senders = accounts.accounts_user_may_send_from(current_user)
    composer = {
        "accounts": senders,
        "account_id": _int(draft.get("account_id"))
        or (senders[0].id if senders else None),
        "to": draft.get("to", _default_to(task)),
        "cc": draft.get("cc", ""),
        "bcc": draft.get("bcc", ""),
        "subject": draft.get("subject", task.name),
        "body": draft.get("body", ""),
        "max_mb": current_app.config["POSTA_MAX_UPLOAD_MB"],
        "connect_url": url_for("email.connect", task=task.id),
        "others_connected": not senders and EmailAccount.any_connected(),
    }
    return email_library.with_extras(composer, task, draft)


@bp.get("/connect")
@email_required
def connect():
    """Offer the ways to connect a mailbox."""
    task_id = _task_arg()
    refused = _connect_refused(task_id)
    if refused:
        return refused
    return render_template("email/connect.html", task_id=task_id)


@bp.route("/connect/exchange", methods=["GET", "POST"])
@email_required
def connect_exchange():
    """Connect a mailbox by IMAP/SMTP with a password or app password."""
    task_id = _task_arg()
    # ?email= names the address to reconnect, which the account limit allows.
    refused = request.method == "GET" and _connect_refused(
        task_id, request.args.get("email")
    )
    if refused:
        return refused
    form = ExchangeForm(data={"email": request.args.get("email", "")})
    if request.method == "POST" and form.validate():
        if request.form.get("action") == "prefill":
            _prefill(form, force=True)
        else:
            try:
                account = accounts.connect_imap_account(
                    current_user, form.data, from_settings=task_id is None
                )
            except accounts.AccountError as exc:
                _field_error(form, exc)
            else:
                flash(_("%(address)s is connected.", address=account.email), "success")
                return redirect(_back(task_id))
    else:
        _prefill(form)
    return render_template(
        "email/exchange.html",
        form=form,
        task_id=task_id,
        prefills={
            d: accounts.MICROSOFT_PREFILL for d in accounts.MICROSOFT_CONSUMER_DOMAINS
        },
    )


@bp.post("/tasks/<int:task_id>/send")
@email_required
def send(task_id):
    """Queue an email from a task's composer."""
    task = db.get_or_404(Task, task_id)
    form = request.form
    if form.get("account_id") == ADD_NEW:
        # Without JavaScript, picking "Add new" in the From list lands here; the
        # draft waits in the session until the connect flow comes back.
        _keep_draft(form)
        return redirect(url_for("email.connect", task=task.id))
    try:
        message = outgoing.queue_send(
            current_user,
            task,
            form.get("account_id"),
            form.get("to", ""),
            form.get("cc", ""),
            form.get("bcc", ""),
            form.get("subject", ""),
            form.get("body", ""),
            request.files.getlist("attachments"),
            signature_id=form.get("signature_id"),
        )
    except (outgoing.OutgoingError, storage.StorageError) as exc:
        flash(str(exc), "error")
        _keep_draft(form)
        return redirect(_task_url(task_id, "composer"))
    flash(_("Email queued; it will be sent in a moment."), "success")
    return redirect(_task_url(task_id, f"message-{message.id}"))


@bp.post("/messages/<int:message_id>/retry")
@email_required
def retry(message_id):
    """Send a failed email again."""
    message = db.get_or_404(Message, message_id)
    try:
        outgoing.retry(current_user, message_id)
    except outgoing.OutgoingError as exc:
        flash(str(exc), "error")
    else:
        flash(_("Email queued again."), "success")
    if message.task_id is None:
        return redirect(url_for("email.integration"))
    return redirect(_task_url(message.task_id, f"message-{message_id}"))


@bp.post("/messages/<int:message_id>/move")
@email_required
def move_message(message_id):
    """Move a received email to another task."""
    message = _visible_message(message_id)
    source = message.task_id
    target = request.form.get("task_ref", "").strip() or request.form.get("task", "")
    try:
        linking.move(current_user, message_id, target)
    except linking.LinkError as exc:
        flash(str(exc), "error")
        return redirect(_task_url(source, f"message-{message_id}"))
    flash(_("Email moved to %(task)s.", task=message.task.name), "success")
    return redirect(_task_url(message.task_id, f"message-{message_id}"))


@bp.post("/messages/<int:message_id>/split")
@email_required
def split_message(message_id):
    """Make a new task from a received email."""
    message = _visible_message(message_id)
    try:
        task = linking.split(current_user, message_id)
    except linking.LinkError as exc:
        flash(str(exc), "error")
        return redirect(_task_url(message.task_id, f"message-{message_id}"))
    flash(_("New task %(task)s made from the email.", task=task.name), "success")
    return redirect(_task_url(task.id, f"message-{message_id}"))


@bp.get("/messages/<int:message_id>/body")
@email_required
def message_body(message_id):
    """Serve a message's sanitized HTML for a sandboxed iframe."""
    message = _visible_message(message_id)
    if not message.html_body:
        abort(404)
    html = _inline_images(message)
    images = request.args.get("images") == "1"
    if images:
        html = show_remote_images(html)
    response = current_app.response_class(html, mimetype="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = (
        BODY_CSP_IMAGES if images else BODY_CSP
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/attachments/<int:attachment_id>")
@email_required
def attachment(attachment_id):
    """Download an attachment of a message on a task."""
    item = db.get_or_404(Attachment, attachment_id)
    _visible_message(item.message_id)
    response = send_file(
        storage.path_for(item.storage_key),
        mimetype=item.content_type,
        as_attachment=True,
        download_name=item.filename,
        conditional=False,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/attachments/<int:attachment_id>/inline")
def inline_image(attachment_id):
    """Serve an inline image of a message on a task, for its HTML body."""
    _refuse_inline_viewer(attachment_id)
    item = db.get_or_404(Attachment, attachment_id)
    _visible_message(item.message_id)
    if item.content_type.lower() not in INLINE_IMAGE_TYPES:
        abort(404)
    response = send_file(
        storage.path_for(item.storage_key),
        mimetype=item.content_type.lower(),
        conditional=False,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/settings")
@email_required
def integration():
    """List the connected accounts with their sync state."""
    return render_template(
        "email/integration.html",
        accounts=accounts.visible_accounts(current_user),
    )


@bp.post("/accounts/<int:account_id>/sync")
@email_required
def sync_account(account_id):
    """Ask for an account to be synced now."""
    account = _managed_account(account_id)
    queue.enqueue(jobs.sync_account, account.id)
    flash(_("Sync requested for %(address)s.", address=account.email), "success")
    return redirect(url_for("email.integration"))


@bp.post("/accounts/<int:account_id>/delete")
@email_required
def delete_account(account_id):
    """Disconnect an account; its emails stay on their tasks."""
    account = _managed_account(account_id)
    address = account.email
    accounts.delete_account(current_user, account)
    flash(_("%(address)s is disconnected.", address=address), "success")
    return redirect(url_for("email.integration"))


def _visible_message(message_id: int) -> Message:
    """Return a message on a task, or 404: mail only shows through its task."""
    message = db.get_or_404(Message, message_id)
    # Every non-guest sees every task; email_required has already refused guests.
    if message.task_id is None:
        abort(404)
    return message


def _inline_images(message: Message) -> str:
    """Point the body's "cid:" images at their inline-image URLs."""
    signer = _inline_signer()
    urls = {
        item.content_id: url_for(
            "email.inline_image",
            attachment_id=item.id,
            t=signer.dumps([item.id, current_user.id]),
        )
        for item in message.attachments
        if item.content_id
    }

    def replace(match: re.Match) -> str:
        url = urls.get(unquote(match.group(2)))
        # An image whose part is missing shows nothing rather than a dead cid:.
        return f'{match.group(1)}{url}"' if url else f'{match.group(1)}"'

    return _CID_SRC.sub(replace, message.html_body)


def _inline_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="posta-inline-image")


def _refuse_inline_viewer(attachment_id: int) -> None:
    """Abort unless a non-guest asks, signed in or through a link made for them.

    The sandboxed body has an opaque origin, so the browser sends its image
    requests without the SameSite session cookie; the body instead links each
    image with a short-lived token naming the attachment and the viewer.
    """
    workspace = Workspace.get()
    if workspace is None or not workspace.email_enabled:
        abort(404)
    user = current_user if current_user.is_authenticated else None
    if user is None and "t" not in request.args:
        abort(current_app.login_manager.unauthorized())
    if user is None:
        try:
            signed_for, user_id = _inline_signer().loads(
                request.args.get("t", ""), max_age=INLINE_URL_SECONDS
            )
        except (BadData, ValueError, TypeError):
            abort(403)
        user = db.session.get(User, user_id) if signed_for == attachment_id else None
    if user is None or not user.is_active or user.is_guest:
        abort(403)


def _move_targets() -> list[Task]:
    """Return the open tasks offered by "Move to task"."""
    return linking.move_targets(MOVE_CHOICES)


def _managed_account(account_id: int) -> EmailAccount:
    account = db.get_or_404(EmailAccount, account_id)
    if not accounts.may_manage(current_user, account):
        abort(403)
    return account


def _connect_refused(task_id: int | None, address: str | None = None):
    """Return a redirect explaining why connecting is refused, or None."""
    reason = permissions.connect_refusal(
        current_user, Workspace.get(), address, from_settings=task_id is None
    )
    if reason is None:
        return None
    flash(str(reason), "error")
    return redirect(_back(task_id))


def _may_send(account) -> bool:
    return accounts.may_send(current_user, account)


def _default_to(task: Task) -> str:
    """Answer whoever wrote last on the task, or whom we wrote to last."""
    last = db.session.scalars(
        select(Message)
        .where(Message.task_id == task.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return ""
    if last.direction == Direction.IN:
        return email.utils.formataddr((last.from_name, last.from_addr))
    return last.to_addrs


def _keep_draft(form) -> None:
    """Keep a refused draft for the composer to show again, when it is small."""
    draft = {name: form.get(name, "") for name in DRAFT_FIELDS}
    if sum(len(value) for value in draft.values()) <= MAX_DRAFT_CHARS:
        session[DRAFT_KEY] = draft


def _prefill(form: ExchangeForm, force: bool = False) -> None:
    """Fill the server fields for known domains (always when asked to)."""
    prefill = accounts.prefill_for(form.email.data)
    if not prefill:
        if force:
            flash(_("Enter your server settings: this domain is not known."), "info")
        return
    for name, value in prefill.items():
        field = getattr(form, name)
        if force or not field.data:
            field.data = str(value)


def _field_error(form: ExchangeForm, exc: accounts.AccountError) -> None:
    field = getattr(form, exc.field, None) if exc.field else None
    if field is None:
        flash(str(exc.message), "error")
    else:
        field.errors = [*field.errors, str(exc.message)]


def _task_arg() -> int | None:
    task_id = _int(request.args.get("task"))
    return task_id if task_id and db.session.get(Task, task_id) else None


def _back(task_id: int | None) -> str:
    if task_id:
        return _task_url(task_id, "composer")
    return url_for("email.integration")


def _task_url(task_id: int, anchor: str) -> str:
    return url_for("tasks.show_task", task_id=task_id, tab="email", _anchor=anchor)


def _int(value) -> int | None:
    return parse_id(value)
