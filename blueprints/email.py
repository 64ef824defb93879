"""The Email add-on's pages: connect accounts, send from tasks, show mail."""

from flask import Blueprint

bp = Blueprint("email", __name__, url_prefix="/email")
