"""Bench 5: wrk against gunicorn (2 workers), alone and while an import runs.

Pages: a task list (a list of 50 tasks) and the task with 200 received emails,
logged in with a session cookie minted through /login. Peer: /static/posta.css
served by the same app (the trivial endpoint; nothing added to the product).
During the import of mailbox "b" (its replies go to other tasks, so the pages
measured do not change) the two pages are loaded again, and gunicorn's log is
searched for "database is locked".
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from bench.posta_setup import OWNER, OWNER_PASSWORD
from bench.rig import REPO, Rig, finish
from bench.servers import _wait_for_port, free_port
from bench.table import Row

NAME = "web"
CONNECTIONS = 16
SECONDS = 10
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
WRK_SCRIPT = str(Path(__file__).resolve().parent / "wrk_report.lua")
TRIVIAL = "/static/posta.css"


def run(rig: Rig) -> list[Row]:
    """Serve the imported instance and load it; return the rows."""
    rig.ensure_imported()
    port = free_port()
    log = rig.workdir / "gunicorn.log"
    server = subprocess.Popen(
        [GUNICORN, "-w", "2", "-b", f"127.0.0.1:{port}", "--error-logfile", str(log)]
        + ["wsgi:app"],
        cwd=REPO,
        env=rig.instance.env(),
    )
    try:
        _wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        cookie = _login(base)
        pages = {
            "task list": f"{base}/lists/{rig.instance.heavy_list['a']}",
            "task with 200 emails": f"{base}/tasks/{rig.instance.heavy_task['a']}",
        }
        _check(pages, cookie)
        alone = {name: _wrk(url, cookie) for name, url in pages.items()}
        trivial = _wrk(base + TRIVIAL, cookie)
        during, overlapped = _during_import(rig, pages, cookie)
    finally:
        server.terminate()
        server.wait(30)
    locked = log.read_text(errors="replace").count("database is locked")
    return _rows(alone, trivial, during, overlapped, locked)


def _rows(alone, trivial, during, overlapped, locked) -> list[Row]:
    rows = []
    peer = f"{TRIVIAL} (trivial)"
    for name, figures in alone.items():
        rps, p95 = figures["rps"], figures["p95"]
        loaded = during[name]
        rows += [
            Row(
                NAME,
                f"{name}: p95",
                p95,
                "ms",
                trivial["p95"],
                peer,
                "<= 50 ms",
                p95 <= 50,
            ),
            Row(
                NAME,
                f"{name}: requests/s",
                rps,
                "req/s",
                trivial["rps"],
                peer,
                ">= 0.5x",
                rps >= 0.5 * trivial["rps"],
            ),
            Row(
                NAME,
                f"{name}: requests/s during import",
                loaded["rps"],
                "req/s",
                rps,
                "same page, no import",
                ">= 0.7x",
                loaded["rps"] >= 0.7 * rps,
            ),
            Row(
                NAME,
                f"{name}: p95 during import",
                loaded["p95"],
                "ms",
                p95,
                "same page, no import",
            ),
            Row(
                NAME,
                f"{name}: non-2xx/3xx + socket errors",
                figures["errors"] + loaded["errors"],
                "",
                target="0",
                ok=figures["errors"] + loaded["errors"] == 0,
            ),
        ]
    rows += [
        Row(NAME, "import overlapped both runs", float(overlapped), "(1 = yes)"),
        Row(
            NAME,
            '"database is locked" in gunicorn log',
            locked,
            "",
            target="0",
            ok=locked == 0,
        ),
    ]
    return rows


def _during_import(rig: Rig, pages: dict, cookie: str) -> tuple[dict, bool]:
    """Load the pages while mailbox "b" is imported; say if it overlapped both."""
    child = rig.start_import("b")
    try:
        during = {name: _wrk(url, cookie) for name, url in pages.items()}
        # Peek without reaping: finish() must still collect the child's rusage.
        overlapped = (
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        )
    finally:
        finish(child, 300)
    return during, overlapped


def _login(base: str) -> str:
    """Log the owner in through the form; return the Cookie header value."""
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = session.post(
        f"{base}/login",
        data={"csrf_token": token, "email": OWNER, "password": OWNER_PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")
    return "; ".join(f"{k}={v}" for k, v in session.cookies.items())


def _check(pages: dict, cookie: str) -> None:
    """Make sure the cookie opens each page (no redirect to the login)."""
    for url in pages.values():
        response = requests.get(
            url, headers={"Cookie": cookie}, allow_redirects=False, timeout=30
        )
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")


def _wrk(url: str, cookie: str) -> dict:
    """Run wrk for SECONDS at CONNECTIONS; return req/s, p50/p95 ms, errors."""
    result = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "10s"]
        + ["-s", WRK_SCRIPT, "-H", f"Cookie: {cookie}", url],
        capture_output=True,
        text=True,
        timeout=SECONDS + 30,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    data = json.loads(line[len("BENCH ") :])
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50": data["p50_us"] / 1000,
        "p95": data["p95_us"] / 1000,
        "errors": data["status_errors"] + data["socket_errors"],
    }
