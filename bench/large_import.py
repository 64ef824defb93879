"""Peak memory of importing one reply with a 30 MB attachment from a real Dovecot.

Usage: .venv/bin/python -m bench.large_import [attachment MB]

Starts the bench's Dovecot on 127.0.0.1 (no latency proxy), delivers one reply
with a random base64 attachment to a task's sent mail, and imports it with
jobs.sync_account in a child process of its own, twice on copies of the same
instance:

- "spooled": as Posta runs (the message goes through a spool file);
- "in memory": LARGE_MESSAGE_BYTES raised so the message takes the small-message
  path (fetched and parsed from bytes), for comparison.

For each it prints tracemalloc's peak over the sync (Python allocations), the
growth of the process's peak RSS (VmHWM) over its RSS before the sync, and
whether the stored file's sha256 equals the attachment's.
"""

import argparse
import base64
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from email.utils import formatdate
from pathlib import Path

from bench import corpus, posta_setup
from bench.rig import peak_rss_mb
from bench.servers import BenchDovecot
from tests.fixtures.servers import free_port

REPO = Path(__file__).resolve().parent.parent
CHUNK = 57 * 1024  # a multiple of 57 bytes encodes to whole 76-character lines
MB = 1024 * 1024


def write_reply(path: Path, parent_id: str, size: int) -> str:
    """Write a reply with a `size`-byte attachment; return the data's sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        out.write(
            "From: Mario Rossi <rossi@client.test>\r\nTo: bench@posta.test\r\n"
            f"Subject: Re: Big file\r\nDate: {formatdate()}\r\n"
            f"Message-ID: <big-{secrets.token_hex(6)}@client.test>\r\n"
            f"In-Reply-To: {parent_id}\r\nReferences: {parent_id}\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nThe file is attached.\r\n"
            "--b\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="big.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
        )
        written = 0
        while written < size:
            data = os.urandom(min(CHUNK, size - written))
            digest.update(data)
            out.write(base64.encodebytes(data).replace(b"\n", b"\r\n"))
            written += len(data)
        out.write(b"--b--\r\n")
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mb", nargs="?", type=float, default=30)
    parser.add_argument("--worker", nargs=2, metavar=("INSTANCE", "ACCOUNT"))
    parser.add_argument("--in-memory", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        _worker(Path(args.worker[0]), int(args.worker[1]), args.in_memory)
        return
    size = int(args.mb * MB)
    dovecot = BenchDovecot().start()
    try:
        with tempfile.TemporaryDirectory(prefix="posta-large-") as tmp:
            _run(dovecot, Path(tmp), size)
    finally:
        dovecot.stop()


def _run(dovecot: BenchDovecot, tmp: Path, size: int) -> None:
    password = secrets.token_urlsafe(12)
    address = dovecot.add_user("large", password)
    mailbox = posta_setup.Mailbox("a", address, password)
    instance = posta_setup.create(
        tmp / "instance", [mailbox], dovecot.server.port, free_port()
    )
    eml = tmp / "big.eml"
    expected = write_reply(eml, corpus.thread_id(0, "a"), size)
    on_disk = eml.stat().st_size
    dovecot.server.deliver(address, eml.read_bytes())
    eml.unlink()
    print(f"message: {on_disk / MB:.1f} MiB raw, attachment {size / MB:.1f} MiB")
    for label, extra in (("spooled", []), ("in memory", ["--in-memory"])):
        copy = instance.copy(tmp / label.replace(" ", "-"))
        command = [sys.executable, "-m", "bench.large_import"]
        command += ["--worker", str(copy.root), str(instance.accounts["a"]), *extra]
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(done.stderr)
            raise SystemExit(f"{label}: worker exited {done.returncode}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{label:>9}: tracemalloc peak {figures['traced'] / MB:6.1f} MiB, "
            f"peak RSS +{figures['rss_growth']:6.1f} MB "
            f"(VmHWM {figures['hwm']:.0f} MB), {figures['wall']:.2f} s, "
            f"files {figures['files']}, sha256 ok: {figures['sha256'] == expected}, "
            f"spool files left: {figures['spool_left']}"
        )


def _worker(root: Path, account_id: int, in_memory: bool) -> None:
    """Run one sync in this process; print its figures as one JSON line."""
    from posta import jobs
    from posta.extensions import db
    from posta.mail import sync
    from posta.models import Attachment
    from posta.services import storage

    if in_memory:
        sync.LARGE_MESSAGE_BYTES = 2**62
    app = posta_setup.Instance(root).app()
    with app.app_context():
        _reset_peak_rss()
        before = _rss_mb()
        tracemalloc.start()
        wall = time.perf_counter()
        jobs.sync_account(account_id)
        wall = time.perf_counter() - wall
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        hwm = peak_rss_mb()
        attachments = db.session.scalars(db.select(Attachment)).all()
        digest = hashlib.sha256()
        for attachment in attachments:
            with open(storage.path_for(attachment.storage_key), "rb") as f:
                while chunk := f.read(MB):
                    digest.update(chunk)
        spool = os.path.join(app.config["POSTA_ATTACHMENTS_DIR"], "spool")
        left = len(os.listdir(spool)) if os.path.isdir(spool) else 0
        figures = {
            "files": len(attachments),
            "wall": wall,
            "traced": traced,
            "hwm": hwm,
            "rss_growth": hwm - before,
            "sha256": digest.hexdigest(),
            "spool_left": left,
        }
    print(json.dumps(figures), flush=True)


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS, so the peak is the sync's (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
