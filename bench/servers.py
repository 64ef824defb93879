"""Start the bench's own Dovecot, aiosmtpd and Redis on 127.0.0.1.

Dovecot and aiosmtpd come from tests/fixtures/servers.py (its classes need no
pytest fixture). Two small gaps are bridged here without copying it:
SmtpServer has no hook for arrival times, so its message list is swapped for
one that stamps each append; and Dovecot has no public Maildir path, so the
layout it creates (mail_root/<user>/Maildir) is rebuilt from mail_root.
"""

import shutil
import subprocess
import time
from pathlib import Path

from tests.fixtures.servers import (
    MAIL_GID,
    MAIL_UID,
    Dovecot,
    SmtpServer,
    _scratch_dir,
    _wait_for_port,
    free_port,
)

__all__ = ["MAIL_GID", "MAIL_UID", "BenchDovecot", "TimedSmtp", "Redis"]


class TimedList(list):
    """A list that records time.time() of every append in `times`."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def append(self, item) -> None:
        """Append and stamp."""
        self.times.append(time.time())
        super().append(item)

    def clear(self) -> None:
        """Forget items and stamps."""
        self.times.clear()
        super().clear()


class TimedSmtp(SmtpServer):
    """The tests' aiosmtpd server, recording when each message was accepted."""

    def __init__(self):
        super().__init__()
        self.messages = TimedList()


class BenchDovecot:
    """The tests' Dovecot in a scratch folder (tmpfs when available)."""

    def __init__(self):
        self.root = _scratch_dir("posta-bench-dovecot-")
        self.server = Dovecot(self.root)

    def start(self) -> "BenchDovecot":
        """Start Dovecot."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop Dovecot (about 2.5 s) and delete its files."""
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def add_user(self, local: str, password: str) -> str:
        """Create a mailbox user; return its address."""
        return self.server.add_user(local, password)

    def maildir(self, address: str) -> Path:
        """Return the user's INBOX Maildir."""
        return self.server.mail_root / address / "Maildir"


class Redis:
    """A private, diskless redis-server on a free loopback port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen | None = None

    def start(self) -> "Redis":
        """Start redis-server in the foreground of a child process."""
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None
