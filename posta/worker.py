"""The RQ worker, started through the app so every job runs in its context.

The default is RQ's forking Worker: each job runs in a fresh child, so a job
that leaks memory, crashes the interpreter or hangs past its timeout costs only
that child. POSTA_WORKER_CLASS = "simple" runs jobs in the worker process
itself (RQ's SimpleWorker): about 10 ms less per job, but one bad job can take
the worker down and its peak memory stays with the worker.
"""

import logging

from flask import Flask
from rq import SimpleWorker, Worker

from posta import queue
from posta.extensions import db

logger = logging.getLogger(__name__)


class AppWorker(Worker):
    """A forking RQ worker whose work horses run inside the Flask app context."""

    flask_app: Flask

    def main_work_horse(self, job, queue):
        # The horse is a fork: never reuse the parent's pooled database connections.
        with self.flask_app.app_context():
            db.engine.dispose(close=False)
            return super().main_work_horse(job, queue)


class AppSimpleWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process, inside the app context."""

    flask_app: Flask

    def execute_job(self, job, queue):
        with self.flask_app.app_context():
            return super().execute_job(job, queue)


WORKER_CLASSES = {"fork": AppWorker, "simple": AppSimpleWorker}


def run_worker(app: Flask, burst: bool = False) -> None:
    """Work Posta's queue until stopped (or until empty with burst)."""
    kind = app.config.get("POSTA_WORKER_CLASS", "fork")
    if kind not in WORKER_CLASSES:
        raise RuntimeError(f"POSTA_WORKER_CLASS must be fork or simple, not {kind!r}")
    rq_queue = queue.rq_queue(app)
    worker = WORKER_CLASSES[kind]([rq_queue], connection=rq_queue.connection)
    worker.flask_app = app
    logger.info("%s worker %s listening on %s", kind, worker.name, rq_queue.name)
    worker.work(burst=burst, with_scheduler=False)
