"""Email templates: a workspace's subjects and bodies with task placeholders.

Placeholders are written {task_name}: single braces never collide with Jinja,
and anything else between braces is refused when the template is saved.
"""

import re

from flask_babel import lazy_gettext as _l

from posta.extensions import db
from posta.models import EmailTemplate, Task, TaskStatus, User
from posta.services import permissions

MAX_NAME = 120
PLACEHOLDER = re.compile(r"\{([^{}\s]*)\}")
PLACEHOLDERS = {
    "task_name": _l("the task's name"),
    "task_id": _l("the task's reference, such as T-42"),
    "task_status": _l("the task's status"),
    "task_due_date": _l("the task's due date (YYYY-MM-DD), or nothing"),
    "task_assignees": _l("the names of the task's assignees"),
    "task_list": _l("the name of the task's list"),
    "viewer_name": _l("the name of the person writing the email"),
}
STATUS_LABELS = {
    TaskStatus.OPEN: _l("Open"),
    TaskStatus.IN_PROGRESS: _l("In progress"),
    TaskStatus.DONE: _l("Done"),
}


class TemplateError(ValueError):
    """A template that cannot be saved, with a message for the person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def create(user: User, name: str, subject: str, body: str) -> EmailTemplate:
    """Save a new template after checking its placeholders."""
    template = EmailTemplate(created_by_id=user.id)
    _fill_in(user, template, name, subject, body)
    db.session.add(template)
    db.session.commit()
    return template


def update(
    user: User, template: EmailTemplate, name: str, subject: str, body: str
) -> None:
    """Change a template after checking its placeholders."""
    _fill_in(user, template, name, subject, body)
    db.session.commit()


def delete(user: User, template: EmailTemplate) -> None:
    """Remove a template; emails written with it are unchanged."""
    _check(permissions.template_refusal(user))
    db.session.delete(template)
    db.session.commit()


def fill(template: EmailTemplate, task: Task, viewer: User) -> dict:
    """Return the template's subject and body with the task's values put in."""
    values = {
        "task_name": task.name,
        "task_id": task.reference,
        "task_status": str(STATUS_LABELS.get(task.status, task.status)),
        "task_due_date": task.due_date.isoformat() if task.due_date else "",
        "task_assignees": ", ".join(u.name for u in task.assignees),
        "task_list": task.task_list.name,
        "viewer_name": viewer.name,
    }

    def put(match):
        return values.get(match.group(1), match.group(0))

    return {
        "subject": PLACEHOLDER.sub(put, template.subject),
        "body": PLACEHOLDER.sub(put, template.body),
    }


def unknown_placeholders(text: str) -> list[str]:
    """Return the placeholders in `text` that Posta does not know, in order."""
    found = [m.group(1) for m in PLACEHOLDER.finditer(text or "")]
    return list(dict.fromkeys(name for name in found if name not in PLACEHOLDERS))


def _fill_in(user, template, name, subject, body) -> None:
    _check(permissions.template_refusal(user))
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise TemplateError(_l("Give the template a name of up to 120 characters."))
    subject = (subject or "").strip()
    body = (body or "").strip()
    if not subject and not body:
        raise TemplateError(_l("Write a subject or a body."))
    unknown = unknown_placeholders(subject + "\n" + body)
    if unknown:
        raise TemplateError(
            _l(
                "Unknown placeholder: %(unknown)s. Use only %(valid)s.",
                unknown=", ".join(f"{{{n}}}" for n in unknown),
                valid=", ".join(f"{{{n}}}" for n in PLACEHOLDERS),
            )
        )
    template.name, template.subject, template.body = name, subject, body


def _check(reason) -> None:
    if reason:
        raise TemplateError(reason)
