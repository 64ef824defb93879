"""Hand jobs to RQ, to a background thread, or run them at once.

The database is the source of truth for work to do (queued sends, accounts to sync);
a job here is only a nudge, so losing one never loses mail: the next cron run or
sweep enqueues it again.
"""

import logging
import queue as stdlib_queue
import threading

from flask import Flask, current_app

logger = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Prepare the job backend named by POSTA_JOBS."""
    mode = app.config["POSTA_JOBS"]
    if mode not in ("rq", "thread", "sync"):
        raise RuntimeError(f"POSTA_JOBS must be rq, thread or sync, not {mode!r}")
    if mode == "rq" and not app.config["REDIS_URL"]:
        raise RuntimeError("POSTA_JOBS=rq needs REDIS_URL")
    app.extensions["posta_queue"] = _ThreadRunner(app) if mode == "thread" else None


def enqueue(func, *args, job_id: str | None = None) -> None:
    """Run func(*args) as a job in the configured backend."""
    app = current_app._get_current_object()
    mode = app.config["POSTA_JOBS"]
    if mode == "sync":
        func(*args)
    elif mode == "thread":
        app.extensions["posta_queue"].put(func, args)
    else:
        rq_queue(app).enqueue(
            func,
            *args,
            job_id=job_id,
            job_timeout=app.config.get("POSTA_JOB_TIMEOUT", 900),
        )
    logger.debug("enqueued %s%r via %s", func.__name__, args, mode)


def redis_connection(app: Flask):
    """Return a Redis client for the configured URL."""
    from redis import Redis

    return Redis.from_url(app.config["REDIS_URL"])


def rq_queue(app: Flask):
    """Return Posta's RQ queue."""
    from rq import Queue

    return Queue(app.config["POSTA_QUEUE_NAME"], connection=redis_connection(app))


class _ThreadRunner:
    """Run jobs one at a time on a daemon thread inside the app context."""

    def __init__(self, app: Flask):
        self._app = app
        self._jobs: stdlib_queue.Queue = stdlib_queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, func, args) -> None:
        self._jobs.put((func, args))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="posta-jobs", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            func, args = self._jobs.get()
            with self._app.app_context():
                try:
                    func(*args)
                except Exception:
                    logger.exception("job %s%r failed", func.__name__, args)
