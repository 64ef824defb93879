"""Plans, roles and per-account permissions, through the server."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from posta import jobs
from posta.extensions import db
from posta.models import EmailAccount, Message, Role, Workspace, utcnow
from posta.services import outgoing, permissions, plans
from tests.email_support import connect, make_mailbox, make_task, messages_on, reply_to


@pytest.fixture
def task():
    return make_task()


def send(client, task, account, body="Here is the quote."):
    return client.post(
        f"/email/tasks/{task.id}/send",
        {"account_id": str(account.id), "to": "rossi@client.test", "body": body},
    )


def workspace():
    db.session.expire_all()
    return Workspace.get()


def account_count():
    return db.session.scalar(select(func.count(EmailAccount.id)))


# Uses of Free


def test_the_last_use_sends_then_sending_is_refused_before_storing(
    owner, member, mailbox, client_for, task, smtp
):
    account = connect(member, mailbox)
    workspace().uses_used = 99
    db.session.commit()
    client = client_for(member)
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert b"1 of 100 uses left." in page.data

    send(client, task, account)
    assert [m.status for m in messages_on(task)] == ["sent"]
    assert workspace().uses_used == 100

    refused = send(client, task, account, body="One more")
    assert refused.location.endswith("#composer")
    assert len(messages_on(task)) == 1
    assert len(smtp.messages) == 1
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert b"0 of 100 uses left." in page.data
    assert b"All 100 emails of Free Forever are used" in page.data
    assert b"Unlimited plan lifts the limit" in page.data
    settings = client_for(owner).get("/settings/plan")
    assert b"0 of 100 uses left." in settings.data


def test_receiving_goes_on_when_no_use_is_left(member, mailbox, task):
    account = connect(member, mailbox)
    sent = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "Quote", "Hi", []
    )
    workspace().uses_used = 100
    db.session.commit()
    mailbox.dovecot.deliver(mailbox.address, reply_to(sent.message_id))
    jobs.sync_account(account.id)
    assert [m.direction for m in messages_on(task)] == ["out", "in"]


def test_a_failed_send_gives_its_use_back_and_a_retry_takes_it_once(
    member, mailbox, client_for, task, smtp
):
    account = connect(member, mailbox)
    account.smtp_port = 1  # nothing listens there: the send fails
    db.session.commit()
    send(client_for(member), task, account)
    [message] = messages_on(task)
    assert message.status == "failed"
    assert not message.counted_use
    assert workspace().uses_used == 0

    account.smtp_port = mailbox.smtp.port
    db.session.commit()
    outgoing.retry(member, message.id)
    db.session.refresh(message)
    assert message.status == "sent"
    assert message.counted_use
    assert workspace().uses_used == 1
    # However often it is asked again, a sent message is not counted again.
    with pytest.raises(outgoing.OutgoingError):
        outgoing.retry(member, message.id)
    assert workspace().uses_used == 1


def test_a_retry_with_no_use_left_is_refused_with_the_reason(member, mailbox, task):
    account = connect(member, mailbox)
    account.smtp_port = 1
    db.session.commit()
    message = outgoing.queue_send(
        member, task, account.id, "rossi@client.test", "", "", "", "Hi", []
    )
    assert workspace().uses_used == 0
    workspace().uses_used = 100
    db.session.commit()
    with pytest.raises(outgoing.OutgoingError, match="Free Forever are used"):
        outgoing.retry(member, message.id)
    db.session.refresh(message)
    assert message.status == "failed"
    assert workspace().uses_used == 100


def test_a_send_the_sweeper_gave_up_on_is_counted_once_when_it_went_out(
    member, mailbox, task
):
    account = connect(member, mailbox)
    message = Message(
        account_id=account.id,
        task_id=task.id,
        direction="out",
        message_id="<m1@posta.test>",
        dedupe_key="<m1@posta.test>",
        status="sending",
        counted_use=True,
        claimed_at=utcnow() - timedelta(hours=1),
        created_at=utcnow() - timedelta(hours=1),
    )
    db.session.add(message)
    workspace().uses_used = 1
    db.session.commit()
    outgoing.sweep()
    db.session.refresh(message)
    assert (message.status, message.counted_use) == ("failed", False)
    assert workspace().uses_used == 0
    # The real outcome arrives late: it was sent after all.
    outgoing._finish(message.id, outgoing.SendStatus.SENT, None)
    outgoing._finish(message.id, outgoing.SendStatus.SENT, None)
    db.session.refresh(message)
    assert (message.status, message.counted_use) == ("sent", True)
    assert workspace().uses_used == 1


def test_other_plans_count_uses_without_a_limit(member, mailbox, client_for, task):
    account = connect(member, mailbox)
    ws = workspace()
    ws.plan, ws.uses_used = "unlimited", 500
    db.session.commit()
    send(client_for(member), task, account)
    assert [m.status for m in messages_on(task)] == ["sent"]
    assert workspace().uses_used == 501
    assert b"uses left" not in client_for(member).get(f"/tasks/{task.id}").data


# Connected accounts


def test_the_account_limit_is_explained_and_enforced_on_the_server(
    owner, member, client_for, dovecot, smtp, task
):
    first = make_mailbox(dovecot, smtp, "first")
    connect(member, first)
    second = make_mailbox(dovecot, smtp, "second")
    client = client_for(member)

    page = client.get(f"/tasks/{task.id}?tab=email")
    assert b'value="add-new" disabled' in page.data
    assert b"Free Forever allows 1 connected email account" in page.data
    assert b"move to Business, which allows 2" in page.data
    settings = client_for(owner).get("/email/settings")
    assert b'id="add-account"' not in settings.data
    assert b"move to Business, which allows 2" in settings.data

    refused = client.get(f"/email/connect?task={task.id}")
    assert refused.status_code == 302
    response = client.post(f"/email/connect/exchange?task={task.id}", second.form())
    assert b"Free Forever allows 1 connected email account" in response.data
    assert account_count() == 1

    # Reconnecting the connected address is not a new account.
    again = client.post(f"/email/connect/exchange?task={task.id}", first.form())
    assert again.status_code == 302
    assert account_count() == 1
    with pytest.raises(permissions.PermissionDenied):
        permissions.check_can_connect(member, workspace(), second.address)
    permissions.check_can_connect(member, workspace(), first.address)

    ws = workspace()
    ws.plan = "business"
    db.session.commit()
    connect(member, second)
    assert account_count() == 2
    third = make_mailbox(dovecot, smtp, "third")
    with pytest.raises(permissions.PermissionDenied, match="Remove one"):
        permissions.check_can_connect(member, workspace(), third.address)


def test_a_smaller_plan_makes_the_newest_accounts_read_only_and_deletes_nothing(
    owner, member, client_for, dovecot, smtp, task
):
    ws = workspace()
    ws.plan = "business"
    db.session.commit()
    older = connect(member, make_mailbox(dovecot, smtp, "older"))
    newer = connect(member, make_mailbox(dovecot, smtp, "newer"))
    send(client_for(member), task, newer)

    response = client_for(owner).post("/settings/plan", {"plan": "free"})
    assert response.status_code == 302
    assert workspace().plan == "free"
    assert account_count() == 2
    assert len(messages_on(task)) == 1
    assert permissions.read_only_account_ids(workspace()) == {newer.id}
    assert {a.id for a in EmailAccount.syncable()} == {older.id, newer.id}

    client = client_for(member)
    refused = send(client, task, newer, body="Again")
    assert refused.location.endswith("#composer")
    assert len(messages_on(task)) == 1
    reason = permissions.send_refusal(member, newer)
    assert "read-only" in str(reason)
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert (
        newer.email.encode()
        not in page.data.split(b'id="email-from"')[1].split(b"</select>")[0]
    )
    settings = client.get("/email/settings")
    assert b"Read-only" in settings.data
    assert b"replies still arrive" in client_for(owner).get("/settings/plan").data

    client.post(f"/email/accounts/{older.id}/delete")
    assert permissions.read_only_account_ids(workspace()) == set()
    send(client, task, newer, body="Again")
    assert len(messages_on(task)) == 2


def test_only_the_owner_changes_the_plan(make_user, email_on, client_for):
    admin = make_user(Role.ADMIN)
    page = client_for(admin).get("/settings/plan")
    assert page.status_code == 200
    assert b"Only the owner changes the plan." in page.data
    assert client_for(admin).post("/settings/plan", {"plan": "business"}).status_code
    assert workspace().plan == "free"
    member = make_user(Role.MEMBER)
    assert client_for(member).get("/settings/plan").status_code == 403


def test_an_unknown_plan_is_refused(owner, client_for):
    client_for(owner).post("/settings/plan", {"plan": "platinum"})
    assert workspace().plan == "free"
    with pytest.raises(plans.PlanError):
        plans.set_plan(workspace(), "platinum")


def test_members_connect_from_a_task_not_from_settings(member, client_for, task):
    client = client_for(member)
    settings = client.get("/email/settings")
    assert b'id="add-account"' not in settings.data
    assert b"Members connect a mailbox from a task" in settings.data
    assert client.get("/email/connect").status_code == 302
    assert client.get(f"/email/connect?task={task.id}").status_code == 200


# Custom email permissions of roles


def test_custom_permissions_need_business_plus_and_say_so(owner, client_for):
    page = client_for(owner).get("/settings/permissions")
    assert b"Custom email permissions come with Business Plus" in page.data
    assert b'name="member_add"' in page.data and b"disabled" in page.data
    client_for(owner).post("/settings/permissions", {})
    assert workspace().member_may_add_accounts


def test_business_plus_owner_restricts_members(
    owner, member, client_for, mailbox, task
):
    ws = workspace()
    ws.plan = "business_plus"
    db.session.commit()
    account = connect(member, mailbox)

    client_for(owner).post("/settings/permissions", {"admin_add": "on"})
    ws = workspace()
    assert (ws.member_may_add_accounts, ws.member_may_send) == (False, False)
    # Turning on Add turns on Send.
    assert (ws.admin_may_add_accounts, ws.admin_may_send) == (True, True)

    client = client_for(member)
    assert "not allowed your role to send" in str(
        permissions.send_refusal(member, account)
    )
    send(client, task, account)
    assert messages_on(task) == []
    page = client.get(f"/tasks/{task.id}?tab=email")
    assert b'id="email-form"' not in page.data
    assert b"not allowed your role to add email accounts" in page.data

    # Back on Business the defaults apply again, the stored choice is kept.
    ws.plan = "business"
    db.session.commit()
    assert permissions.may_send(member, account)
    assert not workspace().member_may_send


# Per-account permissions


@pytest.mark.parametrize(
    ("policy", "may"),
    [
        ("only_me", {"member"}),
        ("admins", {"member", "owner", "admin"}),
        ("everyone", {"member", "owner", "admin", "other"}),
        ("chosen", {"member", "other"}),
    ],
)
def test_who_may_send_from_an_account(
    policy, may, owner, member, make_user, client_for, mailbox
):
    people = {
        "member": member,
        "owner": owner,
        "admin": make_user(Role.ADMIN),
        "other": make_user(Role.MEMBER),
        "guest": make_user(Role.GUEST),
    }
    account = connect(member, mailbox)
    form = {
        "send_policy": policy,
        "send_people": [str(people["other"].id), str(people["guest"].id)],
        "signature_policy": "only_me",
        "template_policy": "only_me",
    }
    url = f"/email/accounts/{account.id}/permissions"
    response = client_for(member).post(url, form)
    assert response.status_code == 302
    allowed = {
        name
        for name, person in people.items()
        if account in permissions.accounts_user_may_send_from(person)
    }
    assert allowed == may


def test_only_the_connector_or_an_admin_sets_an_account_permissions(
    owner, member, make_user, client_for, mailbox
):
    account = connect(member, mailbox)
    other = make_user(Role.MEMBER)
    form = {"send_policy": "everyone", "signature_policy": "everyone"}
    form["template_policy"] = "everyone"
    assert (
        client_for(other).get(f"/email/accounts/{account.id}/settings").status_code
        == 403
    )
    client_for(other).post(f"/email/accounts/{account.id}/permissions", form)
    db.session.refresh(account)
    assert account.send_policy == "only_me"
    client_for(owner).post(f"/email/accounts/{account.id}/permissions", form)
    db.session.refresh(account)
    assert account.send_policy == "everyone"
    page = client_for(member).get(f"/email/accounts/{account.id}/settings")
    assert b"Who may send email from this account" in page.data


def test_the_send_job_asks_the_rules_again(member, mailbox, task):
    account = connect(member, mailbox)
    message = Message(
        account_id=account.id,
        task_id=task.id,
        direction="out",
        message_id="<m2@posta.test>",
        dedupe_key="<m2@posta.test>",
        to_addrs="rossi@client.test",
        text_body="Hi",
        status="queued",
        counted_use=True,
        created_by_id=member.id,
    )
    db.session.add(message)
    db.session.execute(update(Workspace).values(uses_used=1))
    account.send_policy = "nobody-yet"
    db.session.commit()
    jobs.send_message(message.id)
    db.session.refresh(message)
    assert message.status == "failed"
    assert "You may not send from that account." in message.error
    assert workspace().uses_used == 0


def test_contacts_per_account_is_one_hundred():
    assert plans.CONTACTS_PER_ACCOUNT == 100
