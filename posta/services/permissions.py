"""Who may do what with email: the one place views, templates and jobs ask.

Each rule has a `*_refusal` function returning None when allowed, or the reason,
in words for the person, why not; the `may_*` functions are its yes/no form.
"""

from flask_babel import lazy_gettext as _l
from flask_babel import lazy_ngettext as _ln
from sqlalchemy import func, select

from posta.extensions import db
from posta.models import (
    AccountGrant,
    AccountStatus,
    EmailAccount,
    Role,
    User,
    Workspace,
)
from posta.services import plans

ONLY_ME = "only_me"
ADMINS = "admins"
EVERYONE = "everyone"
CHOSEN = "chosen"
POLICIES = (ONLY_ME, ADMINS, EVERYONE, CHOSEN)

SEND = "send"
SIGNATURE = "signature"
TEMPLATE = "template"
ACTIONS = {
    SEND: "send_policy",
    SIGNATURE: "signature_policy",
    TEMPLATE: "template_policy",
}


class PermissionDenied(ValueError):
    """An action the rules refuse, with the reason for the person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


# Roles


def role_may_add_accounts(user: User, workspace: Workspace) -> bool:
    """Tell whether this person's role may connect email accounts."""
    if user.is_guest:
        return False
    if user.role == Role.OWNER or not plans.plan_of(workspace).custom_permissions:
        return True
    if user.role == Role.ADMIN:
        return workspace.admin_may_add_accounts
    return workspace.member_may_add_accounts


def role_may_send(user: User, workspace: Workspace) -> bool:
    """Tell whether this person's role may send email; adding implies sending."""
    if user.is_guest:
        return False
    if user.role == Role.OWNER or not plans.plan_of(workspace).custom_permissions:
        return True
    if user.role == Role.ADMIN:
        return workspace.admin_may_send or workspace.admin_may_add_accounts
    return workspace.member_may_send or workspace.member_may_add_accounts


def role_summary(workspace: Workspace) -> dict[str, dict[str, bool]]:
    """Return what admins and members may do now, as the rules read it."""
    summary = {}
    for role in (Role.ADMIN, Role.MEMBER):
        probe = User(role=role.value)
        summary[role.value] = {
            "add": role_may_add_accounts(probe, workspace),
            "send": role_may_send(probe, workspace),
        }
    return summary


def role_permissions_refusal(user: User, workspace: Workspace):
    """Return why this person may not change the roles' email permissions."""
    if user.role != Role.OWNER:
        return _l("Only the owner changes the email permissions of roles.")
    if not plans.plan_of(workspace).custom_permissions:
        return _l(
            "Custom email permissions come with %(plan)s and Enterprise; on your "
            "plan admins and members may add email accounts and send email.",
            plan=plans.cheapest("custom_permissions").label,
        )
    return None


def set_role_permissions(
    user: User, workspace: Workspace, choices: dict[str, tuple[bool, bool]]
) -> None:
    """Set what admins and members may do with email; adding turns sending on.

    `choices` maps "admin" and "member" to (may add accounts, may send).
    """
    reason = role_permissions_refusal(user, workspace)
    if reason:
        raise PermissionDenied(reason)
    for role, (add, send) in choices.items():
        if role not in (Role.ADMIN, Role.MEMBER):
            raise PermissionDenied(_l("Only admins' and members' permissions are set."))
        setattr(workspace, f"{role}_may_add_accounts", add)
        setattr(workspace, f"{role}_may_send", send or add)
    db.session.commit()


# Connecting accounts


def connect_refusal(
    user: User,
    workspace: Workspace | None,
    address: str | None = None,
    from_settings: bool = False,
):
    """Return why this person may not connect a mailbox now, or None.

    Reconnecting an address that is already connected is not a new account, so
    the account limit does not apply to it.
    """
    if workspace is None or not workspace.email_enabled:
        return _l("The Email app is off.")
    if user.is_guest:
        return _l("Guests cannot use email.")
    if from_settings and not user.is_admin:
        return _l(
            "Members connect a mailbox from a task: open a task, then Email, then "
            "Connect an email."
        )
    if not role_may_add_accounts(user, workspace):
        return _l("The owner has not allowed your role to add email accounts.")
    if address and _account_exists(address):
        return None
    return account_limit_refusal(workspace)


def check_can_connect(
    user: User,
    workspace: Workspace | None,
    address: str | None = None,
    from_settings: bool = False,
) -> None:
    """Raise PermissionDenied unless this person may connect a mailbox now."""
    reason = connect_refusal(user, workspace, address, from_settings)
    if reason:
        raise PermissionDenied(reason)


def account_limit_refusal(workspace: Workspace):
    """Return the explanation when the plan allows no more accounts, or None."""
    plan = plans.plan_of(workspace)
    count = db.session.scalar(select(func.count(EmailAccount.id)))
    if count < plan.accounts:
        return None
    bigger = plans.cheapest_with_accounts(count + 1)
    if bigger is None:
        return _l(
            "%(plan)s allows %(limit)d connected email accounts and all are in use. "
            "Remove one to connect another.",
            plan=plan.label,
            limit=plan.accounts,
        )
    return _ln(
        "%(plan)s allows %(num)d connected email account and it is in use. Remove "
        "it, or move to %(bigger)s, which allows %(more)d.",
        "%(plan)s allows %(num)d connected email accounts and all are in use. "
        "Remove one, or move to %(bigger)s, which allows %(more)d.",
        plan.accounts,
        plan=plan.label,
        bigger=bigger.label,
        more=bigger.accounts,
    )


def read_only_account_ids(workspace: Workspace) -> set[int]:
    """Return the accounts beyond the plan's limit, newest first to go read-only."""
    ids = db.session.scalars(
        select(EmailAccount.id).order_by(EmailAccount.created_at, EmailAccount.id)
    ).all()
    return set(ids[plans.plan_of(workspace).accounts :])


# Sending


def send_refusal(user: User, account: EmailAccount | None, read_only=None):
    """Return why this person may not send from this account, or None.

    `read_only` is the set of read-only account ids, when the caller has it.
    """
    if account is None:
        return _l("You may not send from that account.")
    if user.is_guest:
        return _l("Guests cannot use email.")
    if account.status == AccountStatus.DISABLED:
        return _l("That account is disabled.")
    workspace = Workspace.get()
    if read_only is None:
        read_only = read_only_account_ids(workspace)
    if account.id in read_only:
        return _read_only_reason(account, workspace)
    if not role_may_send(user, workspace):
        return _l("The owner has not allowed your role to send email.")
    if not policy_allows(user, account, SEND):
        return _l("You may not send from that account.")
    return None


def may_send(user: User, account: EmailAccount | None) -> bool:
    """Tell whether this person may send mail from this account."""
    return send_refusal(user, account) is None


def accounts_user_may_send_from(user: User) -> list[EmailAccount]:
    """Return the accounts this person may pick in the composer's From list."""
    accounts = db.session.scalars(
        select(EmailAccount)
        .where(EmailAccount.status != AccountStatus.DISABLED)
        .order_by(EmailAccount.email)
    ).all()
    read_only = read_only_account_ids(Workspace.get())
    return [a for a in accounts if send_refusal(user, a, read_only) is None]


def uses_refusal(workspace: Workspace):
    """Return why no email may be sent on this plan any more, or None."""
    if plans.uses_left(workspace) != 0:
        return None
    return uses_exhausted_reason(workspace)


def uses_exhausted_reason(workspace: Workspace):
    """Return the explanation of a send refused because no use is left."""
    plan = plans.plan_of(workspace)
    return _l(
        "All %(limit)d emails of %(plan)s are used, so Posta sends no more. Replies "
        "still arrive. The Unlimited plan lifts the limit.",
        limit=plan.uses,
        plan=plan.label,
    )


def delivery_refusal(user: User | None, account: EmailAccount):
    """Return why a queued message may no longer go out, or None (for the job)."""
    if user is not None:
        return send_refusal(user, account)
    workspace = Workspace.get()
    if account.id in read_only_account_ids(workspace):
        return _read_only_reason(account, workspace)
    return None


def _read_only_reason(account: EmailAccount, workspace: Workspace):
    plan = plans.plan_of(workspace)
    return _ln(
        "%(address)s is read-only: %(plan)s allows %(num)d connected account. "
        "Replies still arrive; remove an account or change plan to send from it.",
        "%(address)s is read-only: %(plan)s allows %(num)d connected accounts. "
        "Replies still arrive; remove an account or change plan to send from it.",
        plan.accounts,
        address=account.email,
        plan=plan.label,
    )


# Per-account choices


def policy_allows(user: User, account: EmailAccount, action: str) -> bool:
    """Tell whether the account's choice for an action includes this person."""
    policy = getattr(account, ACTIONS[action])
    # Unknown policies deny: a new policy must be taught here first.
    if user.is_guest or policy not in POLICIES:
        return False
    if account.connected_by_id == user.id or policy == EVERYONE:
        return True
    if policy == ADMINS:
        return user.is_admin
    if policy == CHOSEN:
        return user.id in AccountGrant.user_ids(account.id, action)
    return False


def may_manage(user: User, account: EmailAccount) -> bool:
    """Tell whether this person may see, sync, remove or set up this account."""
    return user.is_admin or account.connected_by_id == user.id


def set_account_policies(
    user: User, account: EmailAccount, choices: dict[str, str], chosen: dict
) -> None:
    """Save who may send, sign and write templates with an account.

    `choices` maps each action to a policy; `chosen` maps each action to the ids
    of the people picked when its policy is CHOSEN.
    """
    if not may_manage(user, account):
        raise PermissionDenied(
            _l("Only the person who connected it or an admin may change this.")
        )
    for action, column in ACTIONS.items():
        policy = choices.get(action)
        if policy not in POLICIES:
            raise PermissionDenied(_l("Choose who may, for each permission."))
        setattr(account, column, policy)
    db.session.execute(
        db.delete(AccountGrant).where(AccountGrant.account_id == account.id)
    )
    eligible = {u.id for u in User.active_people() if not u.is_guest}
    for action in ACTIONS:
        if choices[action] != CHOSEN:
            continue
        for user_id in set(chosen.get(action) or ()) & eligible:
            db.session.add(
                AccountGrant(account_id=account.id, user_id=user_id, action=action)
            )
    db.session.commit()


# Signatures and templates


def library_refusal(workspace: Workspace):
    """Return why signatures and templates are unavailable on this plan, or None."""
    if plans.plan_of(workspace).library:
        return None
    return _l(
        "Signatures and email templates come with %(plan)s and the plans above it.",
        plan=plans.cheapest("library").label,
    )


def signature_refusal(user: User, account: EmailAccount):
    """Return why this person may not create signatures for this account, or None."""
    reason = library_refusal(Workspace.get())
    if reason:
        return reason
    if not policy_allows(user, account, SIGNATURE):
        return _l(
            "The person who connected %(address)s has not allowed you to create "
            "its signatures.",
            address=account.email,
        )
    return None


def template_refusal(user: User):
    """Return why this person may not create email templates, or None."""
    reason = library_refusal(Workspace.get())
    if reason:
        return reason
    accounts = db.session.scalars(select(EmailAccount)).all()
    if not any(policy_allows(user, a, TEMPLATE) for a in accounts):
        return _l(
            "Creating templates is allowed per account by whoever connected it; no "
            "account allows you yet."
        )
    return None


def _account_exists(address: str) -> bool:
    return (
        db.session.scalar(
            select(func.count(EmailAccount.id)).where(
                EmailAccount.email == address.strip().lower()
            )
        )
        > 0
    )
