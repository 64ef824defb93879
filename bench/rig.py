"""The servers, corpus and Posta instance that the benches share in one run.

Two mailboxes hold the same corpus shape: "a" is the one every figure is taken
on; "b" (its replies thread into their own tasks) is imported while the web
bench loads the pages, so the pages measured do not change under load.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from bench import corpus, posta_setup
from bench.latency_proxy import LatencyProxy
from bench.servers import MAIL_GID, MAIL_UID, BenchDovecot, TimedSmtp

REPO = Path(__file__).resolve().parent.parent
IMPORT_TIMEOUT = 300


class Rig:
    """Start everything on enter; stop what was started on exit."""

    def __init__(self, workdir: Path, count: int = corpus.COUNT):
        self.workdir = workdir
        self.count = count
        self.dovecot = BenchDovecot()
        self.smtp = TimedSmtp()
        self.proxy: LatencyProxy | None = None
        self.mailboxes: dict[str, posta_setup.Mailbox] = {}
        self.corpus_bytes = 0
        self.instance: posta_setup.Instance | None = None
        self.imported = False

    def __enter__(self) -> "Rig":
        self.dovecot.start()
        self.smtp.start()
        self.proxy = LatencyProxy("127.0.0.1", self.dovecot.server.port).start()
        for prefix in ("a", "b"):
            self._mailbox(prefix)
        self.instance = posta_setup.create(
            self.workdir / "instance",
            list(self.mailboxes.values()),
            self.proxy.port,
            self.smtp.port,
        )
        return self

    def __exit__(self, *exc) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.smtp.stop()
        self.dovecot.stop()

    def _mailbox(self, prefix: str) -> None:
        """Create a Dovecot user (and SMTP login) and write its corpus."""
        password = secrets.token_urlsafe(12)
        address = self.dovecot.add_user(f"bench-{prefix}", password)
        self.smtp.add_user(address, password)
        self.mailboxes[prefix] = posta_setup.Mailbox(prefix, address, password)
        messages = corpus.generate(self.count, prefix=prefix)
        maildir = self.dovecot.maildir(address)
        _, size = corpus.write_maildir(maildir, messages, MAIL_UID, MAIL_GID)
        if prefix == "a":
            self.corpus_bytes = size

    def import_command(self, prefix: str, *extra: str) -> list[str]:
        """Return the command that runs the sync job of a mailbox's account."""
        account = str(self.instance.accounts[prefix])
        return [
            sys.executable,
            "-m",
            "bench.import_worker",
            str(self.instance.root),
            account,
            *extra,
        ]

    def start_import(self, prefix: str, *extra: str) -> subprocess.Popen:
        """Start the sync job of a mailbox's account in a child process."""
        return subprocess.Popen(
            self.import_command(prefix, *extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run_import(self, prefix: str, *extra: str) -> tuple[dict, object]:
        """Run the job to completion; return its JSON figures and rusage."""
        child = self.start_import(prefix, *extra)
        figures, usage = finish(child, IMPORT_TIMEOUT)
        if prefix == "a":
            self.imported = True
        return figures, usage

    def ensure_imported(self) -> None:
        """Import mailbox "a" (unmeasured) unless a bench already did."""
        if not self.imported:
            self.run_import("a")


def finish(child: subprocess.Popen, timeout: float) -> tuple[dict, object]:
    """Wait for an import child; return (its JSON line, its rusage)."""
    code, usage, _ = wait4(child, timeout)
    output = child.stdout.read()
    child.stdout.close()
    if code != 0:
        raise RuntimeError(f"import worker exited {code}")
    return json.loads(output.strip().splitlines()[-1]), usage


def wait4(child: subprocess.Popen, timeout: float) -> tuple[int, object, float]:
    """Wait for a child with a deadline; return (exit code, rusage, peak RSS MB).

    The peak RSS is the child's VmHWM, sampled until it exits: ru_maxrss is not
    used because on Linux it also counts the parent's RSS at fork time.
    """
    deadline = time.monotonic() + timeout
    peak = 0.0
    while time.monotonic() < deadline:
        peak = max(peak, peak_rss_mb(child.pid))
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage, peak
        time.sleep(0.02)
    child.kill()
    child.wait()
    raise TimeoutError(f"{child.args[0]} ran over {timeout} s")


def peak_rss_mb(pid: int | str = "self") -> float:
    """Return a process's peak resident set (VmHWM) in MB, 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
