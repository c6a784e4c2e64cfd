"""The MLflow UI server that ``kdtune ui`` starts and stops (one worker, on the results store)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from kdtune.errors import KdtuneError
from kdtune.tracking.store import ARTIFACTS_FOLDER, check_tracking, is_server_uri, sqlite_path

if TYPE_CHECKING:
    pass


JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def start_ui(
    uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    *,
    artifacts: Path | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``mlflow server`` (UI + REST API) on a local store; returns the process.

    One worker keeps it near 0.5 GB (the default four take ~2.7 GB). The server proxies
    artifact uploads of experiments created through it into ``artifacts`` (default:
    ``mlartifacts`` beside the SQLite file), so clients on other machines can log to it;
    experiments created on the local store keep their own location, which it serves too.
    Output goes to ``log_file`` when given, else to this process's stdout/stderr.
    """
    if is_server_uri(uri):
        raise KdtuneError(f"tracking URI {uri} is already a server: open it in a browser")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KdtuneError(f"workers: must be a positive integer, got {workers!r}")
    check_tracking(uri)
    _check_port_free(host, port)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    root = artifacts or ((db.parent if db else Path.cwd()) / ARTIFACTS_FOLDER)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--artifacts-destination", str(Path(root).resolve()),
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    # MLflow's job runner (huey consumers) is for GenAI jobs kdtune never submits: without it
    # the server is 2 processes instead of 10 (README, "Measured here")
    env = {**os.environ}
    env.setdefault(JOB_EXECUTION_ENV, "false")
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 (the child holds it)
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # its own process group: stop_ui ends the workers too
        )
    finally:
        if out is not None:
            out.close()


def ui_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


def wait_until_up(
    url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``<url>/health`` until it answers 200; a process that exits first, or the
    timeout, raises :class:`KdtuneError`."""
    deadline = time.monotonic() + timeout
    health = url.rstrip("/") + "/health"
    while True:
        if process is not None and process.poll() is not None:
            raise KdtuneError(
                f"mlflow server exited with code {process.returncode} before {url} answered"
            )
        try:
            with urllib.request.urlopen(health, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise KdtuneError(f"mlflow server at {url} did not answer within {timeout:g} s")
        time.sleep(0.25)


def stop_ui(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate the server's process group (server, uvicorn worker, job runner); kill it
    if it has not exited within ``timeout`` seconds."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_ui made the server a group leader
    except (ProcessLookupError, PermissionError):
        if process.poll() is None:
            process.send_signal(sig)


def _check_port_free(host: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise KdtuneError(f"port: must be in 1..65535, got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise KdtuneError(f"port {port} on {host} is not free: {exc.strerror}") from None
