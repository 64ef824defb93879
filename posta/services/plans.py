"""The workspace plans: what each one allows, and the uses counter of Free.

A use is one email sent from Posta. It is taken when the message is queued, in the
same transaction that stores it, so two sends racing for the last use cannot both
win. A send that fails gives its use back (nothing went out); Retry takes one again,
so a message that is finally sent holds exactly one use however often it was
retried. A send that failed ambiguously (the connection broke after the data went
out) gives its use back too: the person is not charged for what may not have left.
"""

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import update

from posta.extensions import db
from posta.models import Direction, Message, SendStatus, Workspace

FREE = "free"
# Each connected account may bring at most this many contacts into the workspace.
CONTACTS_PER_ACCOUNT = 100


@dataclass(frozen=True)
class Plan:
    """What one plan allows; None means unlimited."""

    key: str
    label: object
    accounts: int
    uses: int | None
    library: bool
    custom_permissions: bool


PLANS = {
    plan.key: plan
    for plan in (
        Plan(FREE, _l("Free Forever"), 1, 100, False, False),
        Plan("unlimited", _l("Unlimited"), 1, None, False, False),
        Plan("business", _l("Business"), 2, None, True, False),
        Plan("business_plus", _l("Business Plus"), 2, None, True, True),
        Plan("enterprise", _l("Enterprise"), 2, None, True, True),
    )
}


class PlanError(ValueError):
    """A plan change that cannot be made, with a message for the person."""


def plan_of(workspace: Workspace | None) -> Plan:
    """Return the workspace's plan; an unknown key counts as Free."""
    key = workspace.plan if workspace is not None else FREE
    return PLANS.get(key, PLANS[FREE])


def cheapest(feature: str) -> Plan:
    """Return the first plan, in price order, that has a feature."""
    return next(p for p in PLANS.values() if getattr(p, feature))


def cheapest_with_accounts(count: int) -> Plan | None:
    """Return the first plan that allows this many connected accounts."""
    return next((p for p in PLANS.values() if p.accounts >= count), None)


def set_plan(workspace: Workspace, key: str) -> Plan:
    """Move the workspace to a plan; nothing is deleted when it is a smaller one."""
    if key not in PLANS:
        raise PlanError(_l("Choose one of the plans listed."))
    workspace.plan = key
    db.session.commit()
    return PLANS[key]


def uses_left(workspace: Workspace) -> int | None:
    """Return how many emails may still be sent, or None when unlimited."""
    limit = plan_of(workspace).uses
    if limit is None:
        return None
    return max(limit - workspace.uses_used, 0)


def take_use(workspace: Workspace) -> bool:
    """Take one use for a message about to be stored; False when none is left.

    The caller commits, in the same transaction as the message it stores.
    """
    statement = update(Workspace).where(Workspace.id == workspace.id)
    limit = plan_of(workspace).uses
    if limit is not None:
        statement = statement.where(Workspace.uses_used < limit)
    result = db.session.execute(
        statement.values(uses_used=Workspace.uses_used + 1).execution_options(
            synchronize_session=False
        )
    )
    return result.rowcount == 1


def release_failed_uses() -> None:
    """Give back the uses of messages that failed; the caller commits."""
    released = db.session.execute(
        update(Message)
        .where(
            Message.direction == Direction.OUT,
            Message.status == SendStatus.FAILED,
            Message.counted_use.is_(True),
        )
        .values(counted_use=False)
        .execution_options(synchronize_session=False)
    ).rowcount
    if released:
        _add_uses(-released)


def count_sent(message_id: int) -> None:
    """Make sure a sent message holds its use; the caller commits.

    Only a message whose use was given back (the sweeper called it failed before
    the real outcome arrived) takes it again, so nothing is counted twice.
    """
    taken = db.session.execute(
        update(Message)
        .where(Message.id == message_id, Message.counted_use.is_(False))
        .values(counted_use=True)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken:
        # It went out: it is counted even past the limit.
        _add_uses(taken)


def _add_uses(delta: int) -> None:
    db.session.execute(
        update(Workspace)
        .values(uses_used=Workspace.uses_used + delta)
        .execution_options(synchronize_session=False)
    )
