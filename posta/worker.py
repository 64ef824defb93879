"""The RQ worker, started through the app so every job runs in its context."""

import logging

from flask import Flask
from rq import Worker

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


def run_worker(app: Flask, burst: bool = False) -> None:
    """Work Posta's queue until stopped (or until empty with burst)."""
    rq_queue = queue.rq_queue(app)
    worker = AppWorker([rq_queue], connection=rq_queue.connection)
    worker.flask_app = app
    logger.info("worker %s listening on %s", worker.name, rq_queue.name)
    worker.work(burst=burst, with_scheduler=False)
