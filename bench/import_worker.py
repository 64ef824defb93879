"""Run jobs.sync_account in a process of its own, so its CPU and RSS are its own.

Usage: python -m bench.import_worker INSTANCE_DIR ACCOUNT_ID [--repeat N]
       [--profile FILE]

Prints one JSON line: messages added, wall and CPU seconds of the job runs only
(app start-up excluded), and the process's peak RSS (VmHWM) in MB.
"""

import argparse
import cProfile
import json
import logging
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.posta_setup import Instance
from bench.rig import peak_rss_mb
from posta.extensions import db


def main() -> None:
    """Parse arguments, run the job(s), print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("instance", type=Path)
    parser.add_argument("account", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = Instance(args.instance).app()
    with app.app_context():
        from posta import jobs
        from posta.models import Message

        before = db.session.scalar(select(func.count(Message.id)))
        db.session.commit()

        profiler = cProfile.Profile() if args.profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        for _ in range(args.repeat):
            jobs.sync_account(args.account)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        added = db.session.scalar(select(func.count(Message.id))) - before
    figures = {"added": added, "wall": wall, "cpu": cpu, "rss": peak_rss_mb()}
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
