"""Memory of the MLflow UI server that `kdtune ui` starts, with and without MLflow's job runner.

Starts the server on a fresh SQLite store the way `kdtune ui` does, waits until it answers and
then ``--settle`` seconds, and sums the resident memory (RSS) of every process in its process
group, read from /proc. ``--job-execution true`` forces MLflow's job runner on (its default,
which kdtune turns off).

    python benchmarks/ui_memory.py --job-execution true
    python benchmarks/ui_memory.py --job-execution false
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from kdtune.tracking import start_ui, stop_ui, ui_url, wait_until_up
from kdtune.tracking.server import JOB_EXECUTION_ENV


def group_rss(pgid: int) -> tuple[int, int]:
    """(processes, total RSS in bytes) of process group ``pgid``."""
    count, total = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: pgrp
                continue
            rss_pages = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        count += 1
        total += rss_pages * os.sysconf("SC_PAGE_SIZE")
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job-execution", choices=("true", "false"), default="false")
    parser.add_argument("--port", type=int, default=5123)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    os.environ[JOB_EXECUTION_ENV] = args.job_execution
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        process = start_ui(uri, port=args.port, log_file=Path(tmp) / "server.log")
        try:
            wait_until_up(ui_url("127.0.0.1", args.port), 120, process)
            time.sleep(args.settle)
            count, total = group_rss(process.pid)
        finally:
            stop_ui(process)
    print(f"job execution {args.job_execution}: {count} processes, {total / 2**20:.0f} MiB RSS")


if __name__ == "__main__":
    main()
