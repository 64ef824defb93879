"""Lists, tasks, comments and the activity stream that mixes comments and emails."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from flask_babel import lazy_gettext as _l
from sqlalchemy import case, func, literal, select, union_all
from sqlalchemy.orm import selectinload

from posta.extensions import db
from posta.ids import MAX_ID, parse_id
from posta.models import (
    Comment,
    Direction,
    Message,
    Task,
    TaskList,
    TaskStatus,
    User,
    utcnow,
)

LIST_NAME_MAX = 120
TASK_NAME_MAX = 200
COMMENT_MAX = 20_000
STREAM_PAGE = 50


class TaskError(ValueError):
    """A request about lists or tasks that cannot be carried out, with a message."""


@dataclass(frozen=True)
class ListSummary:
    task_list: TaskList
    open: int
    done: int


@dataclass(frozen=True)
class StreamItem:
    kind: Literal["comment", "email"]
    at: datetime
    obj: Comment | Message


@dataclass(frozen=True)
class StreamPage:
    """One page of a task's activity stream, oldest item first."""

    items: list[StreamItem]
    page: int
    has_earlier: bool

    @property
    def has_later(self) -> bool:
        return self.page > 1


def list_summaries() -> list[ListSummary]:
    """Return every list by name with its counts of open and done tasks."""
    done = func.coalesce(
        func.sum(case((Task.status == TaskStatus.DONE, 1), else_=0)), 0
    )
    rows = db.session.execute(
        select(TaskList, func.count(Task.id), done)
        .outerjoin(Task, Task.list_id == TaskList.id)
        .group_by(TaskList.id)
        .order_by(TaskList.name, TaskList.id)
    ).all()
    return [ListSummary(tl, total - n_done, n_done) for tl, total, n_done in rows]


def create_list(name: str) -> TaskList:
    """Create a list of tasks."""
    name = _clean_name(
        name,
        LIST_NAME_MAX,
        empty=_l("Give the list a name."),
        too_long=_l("A list name can be at most %(n)d characters.", n=LIST_NAME_MAX),
    )
    task_list = TaskList(name=name)
    db.session.add(task_list)
    db.session.commit()
    return task_list


def tasks_in(task_list: TaskList) -> list[Task]:
    """Return a list's tasks and assignees: open ones first, soonest due first."""
    return db.session.scalars(
        select(Task)
        .options(selectinload(Task.assignees))
        .where(Task.list_id == task_list.id)
        .order_by(
            case((Task.status == TaskStatus.DONE, 1), else_=0),
            Task.due_date.is_(None),
            Task.due_date,
            Task.id,
        )
    ).all()


def task_in_list(task_list: TaskList, task_id: int | None) -> Task:
    """Return a task of this list, refusing unknown tasks and those of other lists."""
    task = db.session.get(Task, task_id) if parse_id(task_id) is not None else None
    if task is None:
        raise TaskError(_l("That task does not exist."))
    if task.list_id != task_list.id:
        raise TaskError(_l("That task belongs to another list."))
    return task


def create_task(
    task_list: TaskList,
    author: User,
    name: str,
    description: str = "",
    assignee_ids: Iterable[int] = (),
    due: str = "",
) -> Task:
    """Create a task in a list; due is a YYYY-MM-DD date or empty."""
    task = Task(
        task_list=task_list,
        created_by=author,
        name=_task_name(name),
        description=(description or "").strip(),
        due_date=parse_due(due),
        assignees=_assignees(assignee_ids, keep=()),
    )
    db.session.add(task)
    db.session.commit()
    return task


def update_task(
    task: Task,
    name: str,
    description: str,
    status: str,
    assignee_ids: Iterable[int],
    due: str,
) -> None:
    """Save an edited task; nothing changes unless every field is valid."""
    name = _task_name(name)
    due_date = parse_due(due)
    assignees = _assignees(assignee_ids, keep=task.assignees)
    _check_status(status)
    task.name = name
    task.description = (description or "").strip()
    task.due_date = due_date
    task.assignees = assignees
    _apply_status(task, status)
    db.session.commit()


def set_status(task: Task, status: str) -> None:
    """Move a task to open, in progress or done."""
    _check_status(status)
    _apply_status(task, status)
    db.session.commit()


def add_comment(task: Task, author: User, body: str) -> Comment:
    """Add a comment to a task."""
    body = (body or "").strip()
    if not body:
        raise TaskError(_l("Write something before posting the comment."))
    if len(body) > COMMENT_MAX:
        raise TaskError(_l("Comments can be at most %(n)d characters.", n=COMMENT_MAX))
    comment = Comment(task_id=task.id, author=author, body=body)
    db.session.add(comment)
    db.session.commit()
    return comment


def activity(task: Task, include_email: bool = False, page: int = 1) -> StreamPage:
    """Return a page of the task's stream, oldest first; page 1 is the newest items."""
    # Past MAX_ID pages the offset would be too big to bind; such a page is empty.
    page = min(max(page, 1), MAX_ID)
    keys = select(
        literal("comment").label("kind"),
        Comment.id.label("id"),
        Comment.created_at.label("at"),
    ).where(Comment.task_id == task.id)
    if include_email:
        keys = union_all(
            keys,
            select(literal("email"), Message.id, _message_time_sql()).where(
                Message.task_id == task.id
            ),
        )
    keys = keys.subquery()
    # Newest first, one extra row to tell whether earlier items exist; on equal
    # times the order is the reverse of the oldest-first one below.
    rows = db.session.execute(
        select(keys.c.kind, keys.c.id)
        .order_by(keys.c.at.desc(), keys.c.id.desc(), keys.c.kind.desc())
        .limit(STREAM_PAGE + 1)
        .offset((page - 1) * STREAM_PAGE)
    ).all()
    shown = rows[:STREAM_PAGE]
    items = _comment_items([i for kind, i in shown if kind == "comment"])
    items += _email_items([i for kind, i in shown if kind == "email"])
    # Ties keep comments before emails, so equal timestamps stay stable.
    items.sort(key=lambda item: (item.at, item.obj.id, item.kind))
    return StreamPage(items, page, has_earlier=len(rows) > STREAM_PAGE)


def _comment_items(ids: list[int]) -> list[StreamItem]:
    if not ids:
        return []
    comments = db.session.scalars(
        select(Comment).options(selectinload(Comment.author)).where(Comment.id.in_(ids))
    )
    return [StreamItem("comment", c.created_at, c) for c in comments]


def _email_items(ids: list[int]) -> list[StreamItem]:
    if not ids:
        return []
    messages = db.session.scalars(
        select(Message)
        .options(selectinload(Message.attachments))
        .where(Message.id.in_(ids))
    )
    return [StreamItem("email", _message_time(m), m) for m in messages]


def parse_due(text: str) -> date | None:
    """Return the date in a YYYY-MM-DD string, None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise TaskError(_l("The due date must be a date like 2030-01-31.")) from exc


def _message_time(message: Message) -> datetime:
    # Incoming mail belongs where its sender wrote it, not when we fetched it.
    if message.direction == Direction.IN:
        return message.sent_date or message.created_at
    return message.created_at


def _message_time_sql():
    """Return _message_time as an SQL expression, to order and page in the query."""
    return case(
        (
            Message.direction == Direction.IN,
            func.coalesce(Message.sent_date, Message.created_at),
        ),
        else_=Message.created_at,
    )


def _task_name(name: str) -> str:
    return _clean_name(
        name,
        TASK_NAME_MAX,
        empty=_l("Give the task a name."),
        too_long=_l("A task name can be at most %(n)d characters.", n=TASK_NAME_MAX),
    )


def _clean_name(name: str, limit: int, empty, too_long) -> str:
    name = (name or "").strip()
    if not name:
        raise TaskError(empty)
    if len(name) > limit:
        raise TaskError(too_long)
    return name


def _assignees(ids, keep) -> list[User]:
    """Return the people for ids: active people, or people already assigned."""
    wanted = set(ids)
    if not wanted:
        return []
    found = db.session.scalars(select(User).where(User.id.in_(wanted))).all()
    allowed = [u for u in found if u.active or u in keep]
    if len(allowed) != len(wanted):
        raise TaskError(_l("Assign the task only to active people of this workspace."))
    return sorted(allowed, key=lambda u: u.name)


def _check_status(status: str) -> None:
    if status not in {s.value for s in TaskStatus}:
        raise TaskError(_l("A task is open, in progress or done."))


def _apply_status(task: Task, status: str) -> None:
    if status == TaskStatus.DONE and task.status != TaskStatus.DONE:
        task.closed_at = utcnow()
    elif status != TaskStatus.DONE:
        task.closed_at = None
    task.status = status
    task.updated_at = utcnow()
