"""Lists, tasks, comments and each task's activity stream."""

from functools import wraps

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import (
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)

from blueprints.access import email_visible
from posta.extensions import db
from posta.ids import as_id
from posta.models import Task, TaskList, TaskStatus, User
from posta.services import tasks

bp = Blueprint("tasks", __name__)

STATUS_LABELS = {
    TaskStatus.OPEN: _l("Open"),
    TaskStatus.IN_PROGRESS: _l("In progress"),
    TaskStatus.DONE: _l("Done"),
}


# The services own validation, so their messages are the only ones people see;
# the forms only read fields and carry the CSRF token.
class ListForm(FlaskForm):
    name = StringField(_l("Name"))


class TaskForm(FlaskForm):
    name = StringField(_l("Name"))
    description = TextAreaField(_l("Description"))
    assignees = SelectMultipleField(
        _l("Assignees"), coerce=as_id, validate_choice=False
    )
    due = StringField(_l("Due date"))


class EditTaskForm(TaskForm):
    status = SelectField(
        _l("Status"),
        choices=[SelectChoice(v, label) for v, label in STATUS_LABELS.items()],
        validate_choice=False,
    )


class QuickStatusForm(FlaskForm):
    task_id = IntegerField()
    status = StringField()


class CommentForm(FlaskForm):
    body = TextAreaField(_l("Comment"))


def editors_only(view):
    """Allow everyone but guests, who may only read and comment."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if current_user.is_guest:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


@bp.context_processor
def inject_status_labels():
    # Translated once here, not again for every row that shows a status.
    return {"status_labels": {s: str(label) for s, label in STATUS_LABELS.items()}}


@bp.get("/")
@login_required
def index():
    """Show the lists with their task counts."""
    return render_template(
        "tasks/index.html", summaries=tasks.list_summaries(), form=ListForm()
    )


@bp.post("/lists")
@editors_only
def create_list():
    """Create a list."""
    form = ListForm()
    if not _valid(form):
        return redirect(url_for("tasks.index"))
    try:
        task_list = tasks.create_list(form.name.data)
    except tasks.TaskError as exc:
        flash(str(exc), "error")
        return redirect(url_for("tasks.index"))
    flash(_("List created."), "success")
    return redirect(url_for("tasks.show_list", list_id=task_list.id))


@bp.get("/lists/<int:list_id>")
@login_required
def show_list(list_id):
    """Show a list's tasks, open ones first."""
    task_list = db.get_or_404(TaskList, list_id)
    form = TaskForm()
    form.assignees.choices = _people_choices()
    return render_template(
        "tasks/list.html",
        task_list=task_list,
        tasks=tasks.tasks_in(task_list),
        form=form,
    )


@bp.post("/lists/<int:list_id>/tasks")
@editors_only
def create_task(list_id):
    """Create a task in a list."""
    task_list = db.get_or_404(TaskList, list_id)
    form = TaskForm()
    if _valid(form):
        try:
            task = tasks.create_task(
                task_list,
                current_user,
                form.name.data,
                form.description.data,
                form.assignees.data,
                form.due.data,
            )
        except tasks.TaskError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Task created."), "success")
            return redirect(url_for("tasks.show_task", task_id=task.id))
    return redirect(url_for("tasks.show_list", list_id=task_list.id))


@bp.post("/lists/<int:list_id>/status")
@editors_only
def quick_status(list_id):
    """Close or reopen a task straight from its list."""
    task_list = db.get_or_404(TaskList, list_id)
    form = QuickStatusForm()
    if _valid(form):
        try:
            task = tasks.task_in_list(task_list, form.task_id.data)
            tasks.set_status(task, form.status.data)
        except tasks.TaskError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Task updated."), "success")
    return redirect(url_for("tasks.show_list", list_id=task_list.id))


@bp.get("/tasks/<int:task_id>")
@login_required
def show_task(task_id):
    """Show a task, its activity stream and the comment and email box."""
    task = db.get_or_404(Task, task_id)
    show_email = email_visible()
    form = EditTaskForm(
        formdata=None,
        data={
            "name": task.name,
            "description": task.description,
            "status": task.status,
            "assignees": [u.id for u in task.assignees],
            "due": task.due_date.isoformat() if task.due_date else "",
        },
    )
    form.assignees.choices = _people_choices(task.assignees)
    tab = "email" if show_email and request.args.get("tab") == "email" else "comment"
    page = request.args.get("page", 1, type=int)
    return render_template(
        "tasks/task.html",
        task=task,
        form=form,
        comment_form=CommentForm(formdata=None),
        stream=tasks.activity(task, include_email=show_email, page=page),
        show_email=show_email,
        tab=tab,
    )


@bp.post("/tasks/<int:task_id>/edit")
@editors_only
def edit_task(task_id):
    """Save the task's name, description, status, assignees and due date."""
    task = db.get_or_404(Task, task_id)
    form = EditTaskForm()
    if _valid(form):
        try:
            tasks.update_task(
                task,
                form.name.data,
                form.description.data,
                form.status.data,
                form.assignees.data,
                form.due.data,
            )
        except tasks.TaskError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Task saved."), "success")
    return redirect(url_for("tasks.show_task", task_id=task.id))


@bp.post("/tasks/<int:task_id>/close")
@editors_only
def close_task(task_id):
    """Mark a task done."""
    return _set_status(task_id, TaskStatus.DONE, _("Task closed."))


@bp.post("/tasks/<int:task_id>/reopen")
@editors_only
def reopen_task(task_id):
    """Open a done task again."""
    return _set_status(task_id, TaskStatus.OPEN, _("Task reopened."))


@bp.post("/tasks/<int:task_id>/comments")
@login_required
def add_comment(task_id):
    """Add a comment to a task."""
    task = db.get_or_404(Task, task_id)
    form = CommentForm()
    if _valid(form):
        try:
            comment = tasks.add_comment(task, current_user, form.body.data)
        except tasks.TaskError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Comment added."), "success")
            anchor = f"comment-{comment.id}"
            return redirect(url_for("tasks.show_task", task_id=task.id, _anchor=anchor))
    return redirect(url_for("tasks.show_task", task_id=task.id))


def _set_status(task_id: int, status: str, message: str):
    task = db.get_or_404(Task, task_id)
    tasks.set_status(task, status)
    flash(message, "success")
    return redirect(url_for("tasks.show_task", task_id=task.id))


def _valid(form: FlaskForm) -> bool:
    """Validate a form, flashing the errors of fields the browser sent malformed."""
    if form.validate_on_submit():
        return True
    for errors in form.errors.values():
        for error in errors:
            flash(error, "error")
    return False


def _people_choices(keep=()) -> list[SelectChoice]:
    # People deactivated after being assigned stay selectable, so saving keeps them.
    people = {u.id: u for u in User.active_people()}
    people.update({u.id: u for u in keep})
    ordered = sorted(people.values(), key=lambda u: u.name)
    return [SelectChoice(u.id, u.name) for u in ordered]
