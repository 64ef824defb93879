"""Default configuration. instance/config.py and FLASK_* variables override it."""


class Defaults:
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # Redis for RQ jobs; without it jobs run on a background thread in the web process.
    REDIS_URL = None
    # "rq", "thread" or "sync" (run at once, in the caller: tests and one-shot CLIs).
    POSTA_JOBS = None
    POSTA_QUEUE_NAME = "posta"
    # Seconds between the background syncs that `make run` starts.
    POSTA_SYNC_INTERVAL = 120
    # Remote folders whose new mail is read for replies; a vanished one stops alone.
    POSTA_SYNC_FOLDERS = ["INBOX"]
    # How long one account's sync may hold its slot before another sync may take it.
    POSTA_SYNC_LEASE_SECONDS = 600
    # A CA bundle to trust a team's own Exchange or IMAP server certificate.
    POSTA_CA_BUNDLE = None
    POSTA_MAIL_TIMEOUT = 20
    POSTA_MAX_UPLOAD_MB = 25
    POSTA_INVITE_DAYS = 7
    # Sign in with Microsoft: the Entra app registration (see the README).
    MICROSOFT_CLIENT_ID = None
    MICROSOFT_CLIENT_SECRET = None
    # "common", "organizations", "consumers" or a tenant id.
    MICROSOFT_TENANT = "common"
    MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
    MICROSOFT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
    MAX_CONTENT_LENGTH = 30 * 1024 * 1024
    WTF_CSRF_TIME_LIMIT = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    LANGUAGES = ["en", "it"]
    BABEL_DEFAULT_LOCALE = "en"
