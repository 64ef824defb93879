"""Bench 3: SENDS queued sends through a real RQ worker to aiosmtpd.

Posta: a `flask --app app worker` process (the forking RQ worker) on a private
Redis is started first; then outgoing.queue_send stores and enqueues SENDS
messages. Throughput is SENDS over first queue_send -> last accepted; latency
is queue_send -> accepted by aiosmtpd, per Message-ID. Every Message-ID must
arrive exactly once. Peer: smtplib sending the same bytes in a loop on one
logged-in connection.

That end-to-end figure is bounded by queue_send itself (store + commit +
enqueue, in this process, one after another), which the peer does not pay. So
the worker is also measured alone: SENDS messages are queued first, then a
worker (forking, then simple) is started on a fresh Redis, and its throughput
is taken from the first to the last arrival.
"""

import re
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from redis import Redis as RedisClient
from rq import Worker
from sqlalchemy import select

from bench.rig import REPO, Rig
from bench.servers import Redis
from bench.table import Row, percentile
from posta.extensions import db
from posta.models import Message, Task, User
from posta.services import outgoing

NAME = "send"
SENDS = 500
DELIVERY_TIMEOUT = 180
STALL = 20
FLASK = str(Path(sys.executable).parent / "flask")
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.M)


def run(rig: Rig) -> list[Row]:
    """Measure Posta's queue and the smtplib loop; return the rows."""
    redis = Redis().start()
    try:
        posta = _posta(rig, redis.url)
    finally:
        redis.stop()
    drains = {kind: _drain(rig, kind) for kind in ("fork", "simple")}
    loop_rate = _smtplib_loop(rig, posta["raw"])
    return [
        Row(
            NAME,
            "delivered exactly once",
            posta["once"],
            "msgs",
            target=f"= {SENDS}",
            ok=posta["once"] == SENDS,
        ),
        Row(
            NAME,
            "throughput",
            posta["rate"],
            "msg/s",
            loop_rate,
            "smtplib loop, 1 connection",
            ">= 0.8x",
            posta["rate"] >= 0.8 * loop_rate,
        ),
        Row(NAME, "queue_send -> accepted p50", posta["p50"], "ms"),
        Row(NAME, "queue_send -> accepted p95", posta["p95"], "ms"),
        Row(
            NAME,
            "rows marked sent",
            posta["sent_rows"],
            "msgs",
            target=f"= {SENDS}",
            ok=posta["sent_rows"] == SENDS,
        ),
        Row(NAME, "queue_send call (store + enqueue) mean", posta["queue_ms"], "ms"),
    ] + [
        row
        for kind, drain in drains.items()
        for row in (
            Row(
                NAME,
                f"drain of {SENDS} queued, {kind} worker: delivered exactly once",
                drain["once"],
                "msgs",
                target=f"= {SENDS}",
                ok=drain["once"] == SENDS,
            ),
            Row(
                NAME,
                f"drain of {SENDS} queued, {kind} worker: throughput",
                drain["rate"],
                "msg/s",
                loop_rate,
                "smtplib loop, 1 connection",
                ">= 0.8x",
                drain["rate"] >= 0.8 * loop_rate,
            ),
        )
    ]


def _posta(rig: Rig, redis_url: str) -> dict:
    """Queue SENDS messages with a worker running; return the figures."""
    rig.smtp.messages.clear()
    with open(rig.workdir / "rq-worker.log", "w") as log:
        worker = subprocess.Popen(
            [FLASK, "--app", "app", "worker"],
            cwd=REPO,
            env=rig.instance.env(FLASK_REDIS_URL=redis_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_worker(redis_url)
            queued, queue_seconds = _queue(rig, redis_url)
            _wait_for_deliveries(rig)
            time.sleep(1.0)  # a duplicate would arrive now
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    return _figures(rig, queued, queue_seconds)


def _drain(rig: Rig, kind: str) -> dict:
    """Queue SENDS messages, then start a worker of `kind`; return its figures."""
    redis = Redis().start()
    try:
        rig.smtp.messages.clear()
        queued, _ = _queue(rig, redis.url)
        env = rig.instance.env(FLASK_REDIS_URL=redis.url, FLASK_POSTA_WORKER_CLASS=kind)
        with open(rig.workdir / "rq-worker.log", "w") as log:
            worker = subprocess.Popen(
                [FLASK, "--app", "app", "worker"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_for_deliveries(rig)
                time.sleep(1.0)  # a duplicate would arrive now
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
    finally:
        redis.stop()
    ids = Counter(
        _MESSAGE_ID.search(raw).group(1).decode() for _, _, raw in rig.smtp.messages
    )
    once = sum(1 for m in queued if ids[m] == 1) - sum(
        1 for m in ids if m not in queued
    )
    times = list(rig.smtp.messages.times)
    return {"once": once, "rate": (len(times) - 1) / (max(times) - min(times))}


def _wait_for_deliveries(rig: Rig) -> None:
    """Wait for SENDS arrivals; give up after STALL seconds without progress."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    seen, progress = 0, time.monotonic()
    while len(rig.smtp.messages) < SENDS and time.monotonic() < deadline:
        if len(rig.smtp.messages) > seen:
            seen, progress = len(rig.smtp.messages), time.monotonic()
        if time.monotonic() - progress > STALL:
            raise RuntimeError(f"sends stalled at {seen}: {_worker_error(rig)}")
        time.sleep(0.02)


def _worker_error(rig: Rig) -> str:
    """Return the last line of a traceback in the worker's log, if any."""
    lines = (rig.workdir / "rq-worker.log").read_text(errors="replace").splitlines()
    errors = [line for line in lines if "Error" in line]
    return errors[-1] if errors else "no error in the worker log"


def _wait_for_worker(redis_url: str) -> None:
    connection = RedisClient.from_url(redis_url)
    _wait_for(lambda: Worker.all(connection=connection), 30)


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout} s")
        time.sleep(0.02)


def _queue(rig: Rig, redis_url: str) -> tuple[dict[str, float], float]:
    """Call queue_send SENDS times; return {Message-ID: time queued}, seconds."""
    app = rig.instance.app(POSTA_JOBS="rq", REDIS_URL=redis_url)
    queued = {}
    with app.app_context():
        owner = db.session.scalars(select(User)).first()
        heavy = set(rig.instance.heavy_task.values())
        tasks = [
            t
            for t in db.session.scalars(select(Task).order_by(Task.id).limit(60))
            if t.id not in heavy
        ]
        account = rig.instance.accounts["a"]
        start = time.perf_counter()
        for n in range(SENDS):
            at = time.time()
            message = outgoing.queue_send(
                owner,
                tasks[n % len(tasks)],
                account,
                "Client <client@client.test>",
                "",
                "",
                f"Bench send {n}",
                f"Send number {n}.\n" * 20,
                [],
            )
            queued[message.message_id] = at
        seconds = time.perf_counter() - start
        db.session.remove()
    return queued, seconds


def _figures(rig: Rig, queued: dict[str, float], queue_seconds: float) -> dict:
    """Match arrivals to queue times by Message-ID."""
    arrivals = {}
    ids = Counter()
    for (_, _, raw), at in zip(rig.smtp.messages, rig.smtp.messages.times, strict=True):
        message_id = _MESSAGE_ID.search(raw).group(1).decode()
        ids[message_id] += 1
        arrivals.setdefault(message_id, at)
    once = sum(1 for m in queued if ids[m] == 1) - sum(
        1 for m in ids if m not in queued
    )
    latencies = [(arrivals[m] - queued[m]) * 1000 for m in queued if m in arrivals]
    span = max(arrivals.values()) - min(queued.values())
    return {
        "once": once,
        "rate": len(arrivals) / span,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "queue_ms": queue_seconds * 1000 / SENDS,
        "raw": [raw for _, _, raw in rig.smtp.messages],
        "sent_rows": _sent_rows(rig),
    }


def _sent_rows(rig: Rig) -> int:
    with rig.instance.app().app_context():
        count = len(
            db.session.scalars(
                select(Message.id).where(
                    Message.subject.like("%Bench send %"), Message.status == "sent"
                )
            ).all()
        )
        db.session.remove()
    return count


def _smtplib_loop(rig: Rig, raws: list[bytes]) -> float:
    """Send the same messages with smtplib on one connection; return msg/s."""
    mailbox = rig.mailboxes["a"]
    rig.smtp.messages.clear()
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", rig.smtp.port, timeout=30) as client:
        client.login(mailbox.address, mailbox.password)
        for raw in raws:
            client.sendmail(mailbox.address, ["client@client.test"], raw)
    return len(raws) / (time.perf_counter() - start)
