"""Sign in with Microsoft: the OAuth code flow (Authlib), who may send, contacts.

From a task the flow runs in a popup that tells the task page when it is done;
without one (no JavaScript, popups blocked, Settings) it is a full-page round
trip back to where it started.
"""

import logging

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user

from blueprints.access import email_required, email_visible
from blueprints.email import DRAFT_KEY
from posta.extensions import db
from posta.ids import parse_id
from posta.models import Contact, EmailAccount, Task
from posta.services import contacts, microsoft, permissions, plans

logger = logging.getLogger(__name__)

bp = Blueprint("microsoft", __name__, url_prefix="/email/microsoft")

FLOW_KEY = "microsoft_flow"
OAUTH_EXTENSION = "posta_microsoft_oauth"


@bp.record_once
def _register_oauth(state) -> None:
    """Register Microsoft with Authlib; the endpoints come from the configuration.

    They are given explicitly because a tenant-specific authority has no single
    discovery document to read them from (and the test fake serves none).
    """
    app = state.app
    authorize_url, token_url = microsoft.endpoints(app.config)
    oauth = OAuth(app)
    oauth.register(
        "microsoft",
        client_id=app.config["MICROSOFT_CLIENT_ID"],
        client_secret=app.config["MICROSOFT_CLIENT_SECRET"],
        authorize_url=authorize_url,
        access_token_url=token_url,
        client_kwargs={
            "scope": " ".join(microsoft.SCOPES),
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_post",
            "default_timeout": float(app.config["POSTA_MAIL_TIMEOUT"]),
        },
    )
    app.extensions[OAUTH_EXTENSION] = oauth


@bp.app_context_processor
def inject_microsoft():
    """Give templates the reconnect banner, the setup state and contact suggestions."""
    return {
        "microsoft_to_reconnect": _to_reconnect,
        "microsoft_configured": microsoft.is_configured(),
        "contact_suggestions": Contact.suggestions,
    }


def _to_reconnect() -> list[EmailAccount]:
    if not email_visible():
        return []
    return microsoft.accounts_to_reconnect(current_user)


@bp.get("/")
@email_required
def permissions_page():
    """Explain what Posta will ask Microsoft for, before leaving Posta."""
    if not microsoft.is_configured():
        abort(404)
    flow = _flow_args(request.args)
    account = _reconnecting(flow)
    refusal = microsoft.connect_refusal(
        current_user, _from_settings(flow), account.email if account else None
    )
    return render_template(
        "email/microsoft_permissions.html",
        permissions=microsoft.PERMISSIONS,
        flow=flow,
        account=account,
        refusal=refusal,
    )


@bp.post("/authorize")
@email_required
def authorize():
    """Leave for Microsoft's sign-in, with PKCE, state and nonce."""
    if not microsoft.is_configured():
        abort(404)
    flow = _flow_args(request.form)
    account = _reconnecting(flow)
    flow["nonce"] = microsoft.new_nonce()
    session[FLOW_KEY] = flow
    extra = {"login_hint": account.email} if account else {}
    return _oauth().authorize_redirect(
        url_for(".callback", _external=True), nonce=flow["nonce"], **extra
    )


@bp.get("/callback")
@email_required
def callback():
    """Finish the sign-in: exchange the code, read who signed in, save the account."""
    flow = session.pop(FLOW_KEY, None) or {}
    try:
        token = _oauth().authorize_access_token()
        claims = microsoft.id_token_claims(token, flow.get("nonce"))
        profile, token = microsoft.read_profile(token)
        account = microsoft.connect_account(
            current_user, token, profile, claims, _from_settings(flow)
        )
    except MismatchingStateError:
        return _failed(flow, microsoft.error_text("mismatching_state"))
    except OAuthError as exc:
        logger.info("Microsoft sign-in failed: %s", exc.error)
        return _failed(flow, microsoft.error_text(exc.error, exc.description))
    except requests.RequestException:
        logger.warning("Microsoft sign-in: the token endpoint did not answer")
        return _failed(
            flow, _("Microsoft could not be reached. Try again in a moment.")
        )
    except microsoft.MicrosoftError as exc:
        return _failed(flow, str(exc))
    if not token.get("refresh_token"):
        flash(
            _(
                "Microsoft did not allow Posta to keep syncing (offline access); "
                "you will be asked to reconnect when this sign-in expires."
            ),
            "info",
        )
    wanted = flow.get("account")
    if wanted and wanted != account.id:
        flash(
            _(
                "You signed in as %(address)s, a different mailbox; the one to "
                "reconnect still waits.",
                address=account.email,
            ),
            "info",
        )
    return redirect(url_for(".access", account_id=account.id, **_query(flow)))


@bp.route("/accounts/<int:account_id>/access", methods=["GET", "POST"])
@email_required
def access(account_id):
    """Ask who may send from the account just connected, then finish."""
    account = _managed(account_id)
    flow = _flow_args(request.values)
    if request.method == "POST":
        try:
            microsoft.set_send_policy(
                current_user, account, request.form.get("send_policy", "")
            )
        except microsoft.MicrosoftError as exc:
            flash(str(exc), "error")
        else:
            return _done(account, flow)
    return render_template(
        "email/microsoft_access.html",
        account=account,
        policies=microsoft.SEND_POLICIES,
        flow=flow,
    )


@bp.post("/accounts/<int:account_id>/contacts")
@email_required
def import_contacts(account_id):
    """Bring a Microsoft account's contacts in as address suggestions."""
    account = _managed(account_id)
    try:
        added = contacts.import_from(current_user, account)
    except contacts.ContactsError as exc:
        flash(str(exc), "error")
    else:
        flash(
            ngettext(
                "%(num)d contact imported from %(address)s (at most %(limit)d per "
                "account).",
                "%(num)d contacts imported from %(address)s (at most %(limit)d per "
                "account).",
                added,
                address=account.email,
                limit=plans.CONTACTS_PER_ACCOUNT,
            ),
            "success",
        )
    return redirect(url_for("email.integration"))


def _done(account: EmailAccount, flow: dict):
    """End the flow: tell the task page (popup), or go back to where it began."""
    if flow["popup"]:
        return render_template(
            "email/microsoft_done.html", account=account, task_id=flow["task"]
        )
    flash(_("%(address)s is connected.", address=account.email), "success")
    if not flow["task"]:
        return redirect(url_for("email.integration"))
    draft = session.get(DRAFT_KEY)
    if draft is not None:
        # The draft left with "Add new" picked; come back with the new account.
        session[DRAFT_KEY] = {**draft, "account_id": str(account.id)}
    return redirect(
        url_for(
            "tasks.show_task", task_id=flow["task"], tab="email", _anchor="composer"
        )
    )


def _failed(flow: dict, text: str):
    """Nothing was saved: say why and offer the choices again."""
    flash(text, "error")
    return redirect(url_for("email.connect", **_query(flow)))


def _flow_args(values) -> dict:
    """Read where the flow started: a task, a popup, an account to reconnect."""
    task_id = _int(values.get("task"))
    if task_id and db.session.get(Task, task_id) is None:
        task_id = None
    return {
        "task": task_id,
        "popup": values.get("popup") == "1",
        "account": _int(values.get("account")),
    }


def _query(flow: dict) -> dict:
    query = {"task": flow.get("task"), "account": flow.get("account")}
    if flow.get("popup"):
        query["popup"] = "1"
    return {k: v for k, v in query.items() if v}


def _from_settings(flow: dict) -> bool:
    # Reconnecting is not adding: it may start anywhere, even the banner.
    return not flow.get("task") and not flow.get("account")


def _reconnecting(flow: dict) -> EmailAccount | None:
    return _managed(flow["account"]) if flow["account"] else None


def _managed(account_id: int) -> EmailAccount:
    account = db.get_or_404(EmailAccount, account_id)
    if not permissions.may_manage(current_user, account):
        abort(403)
    return account


def _oauth():
    return current_app.extensions[OAUTH_EXTENSION].microsoft


def _int(value) -> int | None:
    return parse_id(value)
