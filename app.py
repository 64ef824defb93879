"""Posta's application factory."""

import logging
import os
import secrets

from cryptography.fernet import Fernet
from flask import Flask, g, has_request_context, request
from flask_babel import get_locale, get_translations
from flask_login import current_user
from sqlalchemy import event
from sqlalchemy.engine import Engine

from posta import cli, queue
from posta.config import Defaults
from posta.crypto import SecretBox, load_or_create_key
from posta.extensions import babel, csrf, db, login_manager, migrate
from posta.ids import IdConverter
from posta.models import User, UTCDateTime, Workspace

HERE = os.path.dirname(os.path.abspath(__file__))


def create_app(
    test_config: dict | None = None, instance_path: str | None = None
) -> Flask:
    """Build the app from defaults, instance/config.py, FLASK_* and test overrides."""
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    # Before the blueprints add their rules: an id too big for the database is a 404.
    app.url_map.converters["int"] = IdConverter
    _configure(app, test_config)
    _init_extensions(app)
    _register_blueprints(app)
    cli.register(app)
    return app


def _configure(app: Flask, test_config: dict | None) -> None:
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_object(Defaults)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(
        app.instance_path, "posta.db"
    )
    app.config["POSTA_ATTACHMENTS_DIR"] = os.path.join(app.instance_path, "attachments")
    app.config["POSTA_KEY_FILE"] = os.path.join(app.instance_path, "encryption.key")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = os.path.join(HERE, "translations")
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)

    if not app.config.get("SECRET_KEY"):
        path = os.path.join(app.instance_path, "secret.key")
        key = load_or_create_key(path, lambda: secrets.token_hex(32).encode())
        app.config["SECRET_KEY"] = key.decode()
    key = load_or_create_key(app.config["POSTA_KEY_FILE"], Fernet.generate_key)
    app.extensions["posta_secrets"] = SecretBox(key)
    if not app.config["POSTA_JOBS"]:
        app.config["POSTA_JOBS"] = "rq" if app.config["REDIS_URL"] else "thread"
    os.makedirs(app.config["POSTA_ATTACHMENTS_DIR"], exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """Turn on WAL, foreign keys and a busy timeout for every SQLite connection."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _select_locale():
    if not has_request_context():
        return None
    if current_user and current_user.is_authenticated and current_user.locale:
        return current_user.locale
    return request.accept_languages.best_match(["en", "it"]) or "en"


def _translations():
    """Return the request's catalogue, which Flask-Babel looks up for every string."""
    if not has_request_context():
        return get_translations()
    found = g.get("posta_translations")
    if found is None:
        found = g.posta_translations = get_translations()
    return found


def _install_gettext(app: Flask) -> None:
    # A page translates a few hundred strings (labels repeat on every email of
    # the stream), and the lookup cost more than the rest of the rendering.
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: _translations().ugettext(s),
        ngettext=lambda s, p, n: _translations().ungettext(s, p, n),
        pgettext=lambda c, s: _translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: _translations().unpgettext(c, s, p, n),
        newstyle=True,
    )


def _init_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=os.path.join(HERE, "migrations"),
        render_as_batch=True,
        render_item=_render_migration_type,
    )
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_select_locale)
    _install_gettext(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    queue.init_app(app)

    @login_manager.user_loader
    def load_user(user_id):
        return db.session.get(User, int(user_id))

    @app.context_processor
    def inject_globals():
        from blueprints.access import ROLE_LABELS, email_visible

        return {
            "role_labels": ROLE_LABELS,
            "workspace": Workspace.get(),
            "get_locale": get_locale,
            "email_visible": email_visible,
        }

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _render_migration_type(type_, obj, autogen_context):
    """Write UTCDateTime into migrations as the plain type it stores."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _register_blueprints(app: Flask) -> None:
    from blueprints import auth, email, microsoft, plans, settings, tasks

    for module in (auth, tasks, settings, plans, email, microsoft):
        app.register_blueprint(module.bp)
