"""Every plan x role x action, asked of the server with direct requests.

Each case does one action through the test client (real Dovecot and aiosmtpd
where it connects or sends), then checks what the database holds, and that the
permission functions the pages use give the same answer.
"""

import pytest
from sqlalchemy import func, select

from posta.extensions import db
from posta.models import (
    EmailAccount,
    EmailTemplate,
    Message,
    Signature,
    User,
    Workspace,
)
from posta.services import permissions
from tests.email_support import connect, make_mailbox, make_task

PLANS = ("free", "unlimited", "business", "business_plus", "enterprise")
ROLES = ("owner", "admin", "member", "guest")
LIBRARY = {"business", "business_plus", "enterprise"}
CUSTOM = {"business_plus", "enterprise"}
EVERY_PLAN = set(PLANS)

# action: (plans on which it is allowed, roles allowed to do it)
ALLOWED = {
    "connect_from_task": (EVERY_PLAN, {"owner", "admin", "member"}),
    "connect_from_settings": (EVERY_PLAN, {"owner", "admin"}),
    "send": (EVERY_PLAN, {"owner", "admin", "member"}),
    "create_signature": (LIBRARY, {"owner", "admin", "member"}),
    "create_template": (LIBRARY, {"owner", "admin", "member"}),
    "change_permissions": (CUSTOM, {"owner"}),
}
CASES = [
    (plan, role, action, plan in ALLOWED[action][0] and role in ALLOWED[action][1])
    for action in ALLOWED
    for plan in PLANS
    for role in ROLES
]


def count(model, *where):
    db.session.expire_all()
    return db.session.scalar(select(func.count(model.id)).where(*where))


def open_account(owner, **policies):
    """Return an account the owner connected that lets everyone do everything."""
    account = EmailAccount(email="shared@posta.test", connected_by_id=owner.id)
    for column in ("send_policy", "signature_policy", "template_policy"):
        setattr(account, column, policies.get(column, permissions.EVERYONE))
    db.session.add(account)
    db.session.commit()
    return account


def connect_from_task(client, actor, owner, dovecot, smtp):
    mailbox = make_mailbox(dovecot, smtp, local="table")
    task = make_task()
    client.post(f"/email/connect/exchange?task={task.id}", mailbox.form())
    service = permissions.connect_refusal(actor, email_workspace(), mailbox.address)
    return count(EmailAccount, EmailAccount.email == mailbox.address), service


def connect_from_settings(client, actor, owner, dovecot, smtp):
    mailbox = make_mailbox(dovecot, smtp, local="table")
    client.post("/email/connect/exchange", mailbox.form())
    service = permissions.connect_refusal(
        actor, email_workspace(), mailbox.address, from_settings=True
    )
    return count(EmailAccount, EmailAccount.email == mailbox.address), service


def send(client, actor, owner, dovecot, smtp):
    account = connect(owner, make_mailbox(dovecot, smtp, local="table"))
    account.send_policy = permissions.EVERYONE
    db.session.commit()
    task = make_task()
    client.post(
        f"/email/tasks/{task.id}/send",
        {"account_id": str(account.id), "to": "rossi@client.test", "body": "Hi"},
    )
    service = permissions.send_refusal(actor, account)
    sent = count(Message, Message.task_id == task.id, Message.status == "sent")
    return sent, service


def create_signature(client, actor, owner, dovecot, smtp):
    account = open_account(owner)
    client.post(
        f"/email/accounts/{account.id}/signatures",
        {"name": "Work", "html": "<b>Mara</b> · Acme"},
    )
    return count(Signature), permissions.signature_refusal(actor, account)


def create_template(client, actor, owner, dovecot, smtp):
    open_account(owner)
    client.post(
        "/email/templates",
        {"name": "Quote", "subject": "Quote for {task_name}", "body": "Hello"},
    )
    return count(EmailTemplate), permissions.template_refusal(actor)


def change_permissions(client, actor, owner, dovecot, smtp):
    client.post("/settings/permissions", {"admin_add": "on", "admin_send": "on"})
    workspace = email_workspace()
    db.session.refresh(workspace)
    changed = not workspace.member_may_add_accounts
    return changed, permissions.role_permissions_refusal(actor, workspace)


def email_workspace():
    return Workspace.get()


@pytest.fixture
def people(owner):
    """Return one person per role; no passwords, the test client logs them in."""
    team = {"owner": owner}
    for role in ROLES[1:]:
        team[role] = User(email=f"{role}@example.test", name=role.title(), role=role)
        db.session.add(team[role])
    db.session.commit()
    return team


@pytest.mark.parametrize("action", ALLOWED)
@pytest.mark.parametrize("plan", PLANS)
def test_plan_role_action(plan, action, email_on, people, client_for, dovecot, smtp):
    email_on.plan = plan
    db.session.commit()
    wrong = []
    for role in ROLES:
        allowed = plan in ALLOWED[action][0] and role in ALLOWED[action][1]
        actor = people[role]
        done, refusal = globals()[action](
            client_for(actor), actor, people["owner"], dovecot, smtp
        )
        if bool(done) is not allowed or (refusal is None) is not allowed:
            wrong.append((role, "allowed" if allowed else "refused", done, refusal))
        elif not allowed:
            assert str(refusal)
        start_over(email_on)
    assert wrong == []


def start_over(workspace):
    """Remove what the last case made, so the next one starts from the same place."""
    for model in (Message, Signature, EmailTemplate, EmailAccount):
        db.session.execute(db.delete(model))
    for role in ("admin", "member"):
        setattr(workspace, f"{role}_may_add_accounts", True)
        setattr(workspace, f"{role}_may_send", True)
    db.session.commit()


def test_the_table_covers_every_plan_role_and_action():
    assert len(CASES) == 5 * 4 * 6
    assert {c[3] for c in CASES} == {True, False}
