"""Settings: apps, people and invitations, email integration."""

from flask import Blueprint
from flask_login import login_required

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/")
@login_required
def index():
    """Show the settings overview."""
    return "settings"
