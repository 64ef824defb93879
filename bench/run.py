"""`make bench`: start the servers, run the benches, print and save one table.

Usage: python -m bench.run [--only NAME ...] [--count N]
"""

import argparse
import logging
import os
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

from bench import graph_delta, idle_poll, import_mail, new_mail, send, web
from bench.rig import Rig
from bench.table import Row, markdown

BENCHES = {
    module.NAME: module.run
    for module in (import_mail, idle_poll, send, graph_delta, web, new_mail)
}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Run the chosen benches and report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES))
    parser.add_argument("--count", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = args.only or list(BENCHES)
    started = time.perf_counter()
    rows = _run(names, args.count)
    report = _report(rows, time.perf_counter() - started)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text(report + "\n")
    print(f"written to {path}")


def _run(names: list[str], count: int | None) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="posta-bench-") as workdir:
        extra = {"count": count} if count else {}
        with Rig(Path(workdir), **extra) as rig:
            for name in names:
                started = time.perf_counter()
                print(f"bench {name}...", flush=True)
                rows += _guarded(name, BENCHES[name], rig)
                print(
                    f"bench {name}: {time.perf_counter() - started:.1f} s", flush=True
                )
    return rows


def _guarded(name: str, bench, rig: Rig) -> list[Row]:
    """Run one bench; a failure becomes a row so the others still report."""
    try:
        return bench(rig)
    except Exception as exc:
        traceback.print_exc()
        return [Row(name, f"FAILED: {type(exc).__name__}: {exc}"[:160], None, "")]


def _report(rows: list[Row], seconds: float) -> str:
    head = (
        f"# Posta bench {datetime.now():%Y-%m-%d %H:%M}\n\n"
        f"CPUs: {os.cpu_count()}; IMAP through a 20 ms round-trip proxy; "
        f"total run {seconds:.0f} s.\n"
    )
    return head + "\n" + markdown(rows)


if __name__ == "__main__":
    main()
