"""A search on a two-node Ray cluster on loopback (``ray start --head`` + ``ray start --address``),
joined with ``address=``: trials run on both nodes and every result comes back complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import ray.cloudpickle
import toy_trial

from kdtune.results import COMPLETE
from kdtune.space import parse_space
from kdtune.tune import run_search

pytestmark = pytest.mark.slow

ray.cloudpickle.register_pickle_by_value(toy_trial)

SPACE = """
name: cluster
level: second
sampler: {type: grid, seed: 0}
pruner: {type: none}
budget: {num_samples: 4, max_epochs: 4, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.5}}
search:
  grid: [{alpha: 0.1}, {alpha: 0.3}, {alpha: 0.6}, {alpha: 0.9}]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def _start_node(args: list[str], env: dict[str, str]) -> int:
    """``ray start ...`` in a session of its own; returns the session id (= its pid).

    The node's daemons stay in that session, so the teardown can stop exactly them (never
    ``ray stop``, which would stop every Ray on this shared machine).
    """
    proc = subprocess.Popen(
        [_ray_cli(), "start", *args, "--disable-usage-stats"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"ray start {' '.join(args)} failed:\n{out}"
    return proc.pid


def _session_pids(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # the session id field of /proc/PID/stat
            pids.append(int(stat.parent.name))
    return pids


def _stop_sessions(sids: list[int]) -> None:
    """SIGTERM every process of these sessions, then SIGKILL what is left."""
    for sig, pause in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
        for sid in sids:
            for pid in _session_pids(sid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        time.sleep(pause)


@pytest.fixture
def cluster(nodes: tuple[str, list[int]]) -> str:
    return nodes[0]


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[int]]]:
    """The cluster's address and its nodes' session ids (head, worker)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = dict(os.environ)
    temp = Path(tempfile.mkdtemp(prefix="kdc-", dir="/tmp"))  # short: socket paths
    port = _free_port()
    sids: list[int] = []
    try:
        sids.append(
            _start_node(
                [
                    "--head",
                    f"--port={port}",
                    "--node-ip-address=127.0.0.1",
                    "--num-cpus=1",
                    f"--temp-dir={temp}",
                    "--include-dashboard=false",
                ],
                env,
            )
        )
        sids.append(
            _start_node(
                [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
                env,
            )
        )
        yield f"127.0.0.1:{port}", sids
    finally:
        _stop_sessions(sids)
        shutil.rmtree(temp, ignore_errors=True)


def test_search_on_a_two_node_cluster(cluster: str, tmp_path: Path) -> None:
    space = parse_space(SPACE, file="cluster.yaml")
    result = run_search(
        space, results=tmp_path, address=cluster, trial_fn=toy_trial.toy_fit, progress=False
    )
    assert [t.state for t in result.trials] == [COMPLETE] * 4
    nodes = {t.node for t in result.trials}
    assert len(nodes) == 2, f"trials ran on {nodes}"
    for record in result.trials:
        assert [h["epoch"] for h in record.history] == [1.0, 2.0, 3.0, 4.0]
        a = toy_trial.alpha_of(record.config)
        assert record.history[-1]["val/ap"] == pytest.approx(toy_trial.toy_ap(a, 4))
        assert record.checkpoint_dir and Path(record.checkpoint_dir).is_dir()
    study = optuna.load_study(study_name=result.study_name, storage=str(result.study_storage))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


LOST = (
    SPACE.replace("name: cluster", "name: lost")
    .replace("max_concurrent: 2}", "max_concurrent: 2, max_failures: 2}")
    .replace("sleep: 0.5", "sleep: 1.5")
)


def _raylet(sid: int) -> tuple[int, str]:
    """The worker node's raylet: its pid and its socket (how ray.nodes() names it)."""
    for pid in _session_pids(sid):
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if args and args[0].endswith("raylet"):
                socket = next(a.split("=", 1)[1] for a in args if "--raylet_socket_name=" in a)
                return pid, socket
    raise AssertionError("the worker node has no raylet")


def test_a_node_lost_mid_trial(nodes: tuple[str, list[int]], tmp_path: Path) -> None:
    """SIGKILL the worker node's raylet while a trial runs there, past its first checkpoint:
    with budget.max_failures the trial restarts on the surviving node from that checkpoint,
    and every trial completes."""
    import json
    import threading

    import ray

    from kdtune.results import SEARCH_FILE

    address, (_, worker) = nodes
    raylet, socket = _raylet(worker)
    lost: list[str] = []
    seen: list[str] = []

    def kill_the_worker_mid_trial() -> None:
        path = tmp_path / "lost" / SEARCH_FILE
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not done.is_set():
            try:
                node = next(n for n in ray.nodes() if n["RayletSocketName"] == socket)
                suffix = "/" + node["NodeID"][:12]
                trials = json.loads(path.read_text())["trials"]
                if any(
                    t["state"] == "running" and t["history"] and t["node"].endswith(suffix)
                    for t in trials
                ):
                    lost.append(suffix)
                    os.kill(raylet, signal.SIGKILL)
                    return
            except Exception as exc:  # Ray not up yet, search.json being written
                seen[:] = [repr(exc)]
            time.sleep(0.2)

    space = parse_space(LOST, file="lost.yaml")
    assert space.budget.max_failures == 2
    done = threading.Event()
    killer = threading.Thread(target=kill_the_worker_mid_trial)
    killer.start()
    try:
        result = run_search(
            space, results=tmp_path, address=address, trial_fn=toy_trial.toy_fit, progress=False
        )
    finally:
        done.set()
        killer.join()
    assert lost, f"no trial ran on the worker node in time ({seen})"
    assert [t.state for t in result.trials] == [COMPLETE] * 4
    for record in result.trials:
        assert [h["epoch"] for h in record.history] == [1.0, 2.0, 3.0, 4.0]
    restarted = [t for t in result.trials if any(h["toy/start_epoch"] > 1 for h in t.history)]
    assert restarted, "no trial went on from its checkpoint"
    for record in restarted:  # on the surviving node
        assert record.node and not record.node.endswith(lost[0])
    study = optuna.load_study(study_name=result.study_name, storage=str(result.study_storage))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
