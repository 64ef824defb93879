"""Lists, tasks, comments and each task's activity stream."""

from flask import Blueprint
from flask_login import login_required

bp = Blueprint("tasks", __name__)


@bp.route("/")
@login_required
def index():
    """Show the lists."""
    return "lists"
