"""Faults injected into whole searches, run as a user runs them (``kdtune search`` in a process
of its own, with the toy trial in place of training): Ctrl-C and SIGTERM, a tracking server
killed mid-search, a search name used again, a moved results folder, a fault in each stage (a
teacher that diverges in the prepare stage with real training), a confirmation run resumed
mid-run. All slow (Ray)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray.cloudpickle
import toy_trial
from helpers import free_port

from kdtune import tracking
from kdtune.results import COMPLETE, RUNNING, SEARCH_FILE, SearchResult

pytestmark = pytest.mark.slow

ray.cloudpickle.register_pickle_by_value(toy_trial)

GRID = """
name: {name}
level: second
sampler: {{type: grid, seed: 0}}
pruner: {{type: none}}
budget: {{max_epochs: {epochs}, eval_every: 1, max_concurrent: 2}}
resources: {{cpu: 1}}
train: {{extra: {{sleep: {sleep}}}}}
search:
  grid: [{{alpha: 0.1}}, {{alpha: 0.3}}, {{alpha: 0.6}}, {{alpha: 0.9}}]
"""
POINTS = ["fixed:0.1", "fixed:0.4", "fixed:0.7", "fixed:0.9"]

# `kdtune search` as the CLI runs it, with the toy trial for training and no teacher to prepare
CLI = """
import sys
sys.path.insert(0, {tests!r})
import ray.cloudpickle, toy_trial
ray.cloudpickle.register_pickle_by_value(toy_trial)
from kdtune.search import prepare
from kdtune.tune import driver
prepare.teacher_and_bank = lambda base, root, say: None
driver.TrainFit = lambda root: toy_trial.toy_fit
from kdtune.cli import main
main(sys.argv[1:])
"""


def kdtune(args: list[str]) -> subprocess.Popen[str]:
    """``kdtune ARGS`` in a session (and process group) of its own, as from a terminal."""
    script = CLI.format(tests=str(Path(__file__).parent))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_session(proc.pid)
            proc.wait()
    return proc.returncode, out, err


def kill_session(sid: int) -> None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def wait_for(what: str, ready: Any, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the search ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def records(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / SEARCH_FILE).read_text())["trials"])
    except (OSError, ValueError, KeyError):
        return []


def space_file(tmp_path: Path, name: str, epochs: int = 6, sleep: float = 0.4) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(GRID.format(name=name, epochs=epochs, sleep=sleep))
    return path


def runs(uri: str, search: str) -> tuple[list[Any], list[Any]]:
    """The search's parent runs and trial runs in the store."""
    client = tracking.client(uri)
    exp = client.get_experiment_by_name(tracking.experiment_name(search))
    assert exp is not None
    every = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in every if r.data.tags.get(tracking.TAG_KIND) == "search"]
    trials = [r for r in every if r.data.tags.get(tracking.TAG_KIND) == "trial"]
    return parents, trials


def assert_every_point_once(folder: Path, uri: str, name: str) -> None:
    """Each grid point complete once in search.json, the study and MLflow (one run each)."""
    result = SearchResult.load(folder / SEARCH_FILE)
    assert sorted(t.config["schedule"] for t in result.trials) == POINTS
    assert {t.state for t in result.trials} == {COMPLETE}
    study = optuna.load_study(study_name=name, storage=str(result.study_storage))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * len(POINTS)
    parents, trials = runs(uri, name)
    assert [p.info.status for p in parents] == ["FINISHED"]
    by_trial = {r.data.tags[tracking.TAG_TRIAL]: r for r in trials}
    assert len(by_trial) == len(trials) == len(POINTS)  # no duplicates
    for record in result.trials:
        run = by_trial[record.trial_id]
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.TAG_STATE] == COMPLETE
        assert run.data.metrics[tracking.FINAL_AP_METRIC] == pytest.approx(record.value())


# ------------------------------------------------------------------------------ signals


def search_two_epochs_in(
    tmp_path: Path, name: str
) -> tuple[Path, Path, str, list[str], subprocess.Popen[str]]:
    """A grid search ``name`` started as from a terminal, once a trial is two epochs in: its
    space file, results folder, tracking URI, command-line arguments and process."""
    spec = space_file(tmp_path, name)
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["search", str(spec), "--no-progress", "--results", str(results), "--tracking-uri", uri]
    proc = kdtune(args)
    wait_for(
        "a trial two epochs in",
        lambda: any(len(t["history"]) >= 2 for t in records(results / name)),
        proc,
    )
    return spec, results, uri, args, proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_the_search_and_resume_completes_it(tmp_path: Path, sig: int) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) and SIGTERM (to the process, as docker
    stop sends it): one line naming the resume command, exit 128 + signal, no stack dump;
    the study's running trials left RUNNING, their MLflow runs and the parent KILLED. The
    resume (from a moved results folder, for SIGTERM) completes every point once."""
    name = f"sig{int(sig)}"
    spec, results, uri, args, proc = search_two_epochs_in(tmp_path, name)
    folder = results / name
    before = {t["trial_id"]: len(t["history"]) for t in records(folder) if t["state"] == RUNNING}
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what Ctrl-C does
    else:
        os.kill(proc.pid, sig)  # what docker stop does
    code, out, err = finish(proc, timeout=120)

    assert code == 128 + sig, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2, err  # the notice, then one line naming the command that resumes
    assert lines[0].startswith(f"{signal.Signals(sig).name}: stopping each trial at its next")
    assert lines[1].startswith("interrupted: ")
    assert f"kdtune search {spec} --resume --results {results}" in lines[1]
    assert "Traceback" not in err + out and "Stack" not in err
    running = [t for t in records(folder) if t["state"] == RUNNING]
    assert running
    stopped_at = {t["trial_id"]: len(t["history"]) for t in running}
    for trial_id, epochs in before.items():  # it went on to its next checkpoint, then stopped
        assert stopped_at[trial_id] > epochs, (before, stopped_at)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert "FAIL" not in {t.state.name for t in study.trials}
    stored = {t.number: t.state.name for t in study.trials}
    assert all(stored[t["number"]] == "RUNNING" for t in running)
    parents, trials = runs(uri, name)
    assert [p.info.status for p in parents] == ["KILLED"]
    killed = {r.data.tags[tracking.TAG_TRIAL] for r in trials if r.info.status == "KILLED"}
    assert killed == {t["trial_id"] for t in running}

    if sig == signal.SIGTERM:  # the results folder moved before the resume
        moved = tmp_path / "elsewhere"
        shutil.move(str(results), moved)
        results, folder = moved, moved / name
        args[args.index("--results") + 1] = str(results)
    code, out, err = finish(kdtune([*args, "--resume"]))
    assert code == 0, err
    assert_every_point_once(folder, uri, name)
    result = SearchResult.load(folder / SEARCH_FILE)
    for record in result.trials:  # checkpoints found at the new place
        assert record.checkpoint_dir and Path(record.checkpoint_dir).is_relative_to(folder)
        assert [h["epoch"] for h in record.history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    for record in result.trials:  # each stopped trial went on from the checkpoint it stopped at
        if stopped_at.get(record.trial_id):
            starts = {h.get("toy/start_epoch", 1.0) for h in record.history}
            assert starts == {1.0, stopped_at[record.trial_id] + 1.0}, record.history


def test_sigterm_to_the_whole_process_group_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM to the search's whole process group (``timeout``, a batch scheduler) ends
    Ray's own processes with it, so no trial reaches its next checkpoint and Tune's loop is
    stuck on Ray: kdtune sees Ray's processes gone, saves what it has and gives the same one
    line and exit code as for a SIGTERM to the search alone, within seconds (not after Ray's
    wait for its GCS). The trials stay RUNNING in the study, never FAIL, their MLflow runs
    and the parent end KILLED, and a resume completes every point once."""
    name = "groupterm"
    spec, results, uri, args, proc = search_two_epochs_in(tmp_path, name)
    folder = results / name
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    code, _, err = finish(proc, timeout=120)
    took = time.monotonic() - sent

    assert code == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2, err  # no line of Ray's
    assert lines[0].startswith("SIGTERM: stopping each trial at its next")
    assert lines[1].startswith("interrupted: ")
    assert f"kdtune search {spec} --resume --results {results}" in lines[1]
    assert took < 20, f"{took:.0f} s after the signal"
    running = [t for t in records(folder) if t["state"] == RUNNING]
    assert running
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert "FAIL" not in {t.state.name for t in study.trials}
    parents, trials = runs(uri, name)
    assert [p.info.status for p in parents] == ["KILLED"]
    killed = {r.data.tags[tracking.TAG_TRIAL] for r in trials if r.info.status == "KILLED"}
    assert killed == {t["trial_id"] for t in running}

    code, _, err = finish(kdtune([*args, "--resume"]))
    assert code == 0, err
    assert_every_point_once(folder, uri, name)


# ------------------------------------------------------------------------------ the server


@pytest.fixture
def server_store(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A real ``mlflow server`` that the test can kill and start again on the same port."""
    store = tmp_path / "server"
    store.mkdir()
    uri = tracking.resolve_tracking_uri(None, store)
    port = free_port()
    url = tracking.ui_url("127.0.0.1", port)
    procs: list[Any] = []

    def start() -> None:
        from kdtune.errors import KdtuneError

        deadline = time.monotonic() + 120
        while True:  # the killed server's port may linger for a while (TIME_WAIT)
            try:
                proc = tracking.start_ui(uri, port=port, workers=1, log_file=store / "server.log")
                break
            except KdtuneError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        procs.append(proc)
        tracking.wait_until_up(url, timeout=240, process=proc)

    def stop() -> None:
        tracking.stop_ui(procs[-1])

    start()
    try:
        yield url, (start, stop)
    finally:
        for proc in procs:
            if proc.poll() is None:
                tracking.stop_ui(proc)


def test_a_tracking_server_killed_mid_search(tmp_path: Path, server_store: Any) -> None:
    """The server dies after the first trial: the search goes on at full speed (no call
    waits on MLflow's retries), ends with exit 0 and one warning line; once the server is back,
    `kdtune sync` logs every trial once (run twice: still once)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    url, (start, stop) = server_store
    name = "lagged"
    spec = space_file(tmp_path, name, epochs=3, sleep=0.3)
    results = tmp_path / "results"
    args = ["--results", str(results), "--tracking-uri", url]
    began = time.monotonic()
    proc = kdtune(["search", str(spec), "--no-progress", *args])
    folder = results / name
    wait_for("a trial's end", lambda: any(t["state"] == COMPLETE for t in records(folder)), proc)
    stop()
    killed_at = time.monotonic()
    code, out, err = finish(proc)
    after_kill = time.monotonic() - killed_at
    assert code == 0, err
    assert "Traceback" not in out + err
    warnings = [line for line in out.splitlines() if "tracking lagged" in line]
    assert len(warnings) == 1 and f"kdtune sync {name}" in warnings[0], out
    # one MLflow call with its default settings waits this long on a dead server, per try;
    # the whole rest of the search took less
    assert after_kill < MLFLOW_HTTP_REQUEST_TIMEOUT.default, (after_kill, time.monotonic() - began)
    assert f"{len(POINTS)} trials: " in out  # the report, though MLflow did not take it

    start()
    for _ in range(2):
        code, out, err = finish(kdtune(["sync", name, *args]))
        assert code == 0, err
        assert_every_point_once(folder, url, name)


def test_an_unreachable_server_is_refused_before_any_work(tmp_path: Path) -> None:
    spec = space_file(tmp_path, "nowhere")
    url = f"http://127.0.0.1:{free_port()}"
    proc = kdtune(["search", str(spec), "--results", str(tmp_path / "r"), "--tracking-uri", url])
    code, _, err = finish(proc, timeout=120)
    assert code == 2 and "is not reachable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "nowhere").exists()


# ------------------------------------------------------------------------------ names


def test_a_search_name_used_again_gets_its_own_parent_run(tmp_path: Path) -> None:
    """Two searches of one name in two results folders, one store: two parent runs; compare
    reads the latest, and the earlier one by its parent run id."""
    from kdtune import api

    name = "again"
    spec = space_file(tmp_path, name, epochs=2, sleep=0.05)
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    firsts: list[SearchResult] = []
    for folder in ("first", "second"):
        args = ["--no-progress", "--results", str(tmp_path / folder), "--tracking-uri", uri]
        code, _, err = finish(kdtune(["search", str(spec), *args]))
        assert code == 0, err
        firsts.append(SearchResult.load(tmp_path / folder / name / SEARCH_FILE))
    assert firsts[0].search_id and firsts[0].search_id != firsts[1].search_id
    parents, trials = runs(uri, name)
    assert len(parents) == 2 and len(trials) == 2 * len(POINTS)
    parent_of = {p.data.tags[tracking.TAG_SEARCH_ID]: p.info.run_id for p in parents}

    latest = json.loads(api.compare([name], fmt="json", tracking_uri=uri).text)
    assert sorted(r["trial"] for r in latest) == sorted(t.trial_id for t in firsts[1].trials)
    earlier_id = parent_of[firsts[0].search_id]
    earlier = json.loads(api.compare([earlier_id], fmt="json", tracking_uri=uri).text)
    assert sorted(r["trial"] for r in earlier) == sorted(t.trial_id for t in firsts[0].trials)
    assert {r["search"] for r in earlier} == {name}


# ------------------------------------------------------------------ the confirmation stage

CONFIRM_CLI = CLI.replace(
    "from kdtune.cli import main",
    "from kdtune.tune import confirm\nconfirm.TrainFit = lambda root: toy_trial.toy_fit\n"
    "from kdtune.cli import main",
)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm-to-the-group"]
)
def test_a_signal_during_the_confirmation_stage_saves_it_and_resume_completes_it(
    tmp_path: Path, sig: int
) -> None:
    """Ctrl-C while the confirmation runs, or SIGTERM to the whole process group (which ends
    Ray's own processes too): exit 128 + signal and the resume command, no line of Ray's; the
    parent run KILLED. The resume completes every confirmation run once (search.json, the
    study, MLflow). The toy trial keeps no detections, so the stage ends without a verdict
    (a warning)."""
    name = f"sigconfirm{int(sig)}"
    spec = space_file(tmp_path, name, epochs=4, sleep=1.0)
    spec.write_text(spec.read_text() + "confirm: {top_k: 1, seeds: 2}\n")
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["search", str(spec), "--no-progress", "--results", str(results), "--tracking-uri", uri]
    script = CONFIRM_CLI.format(tests=str(Path(__file__).parent))

    def start(extra: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, *args, *extra],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    proc = start([])
    stage = results / name / "confirm" / "round1"
    wait_for("a confirmation run done", lambda: any(records(stage)), proc, timeout=300)
    os.killpg(proc.pid, sig)
    code, out, err = finish(proc, timeout=120)
    assert code == 128 + sig, err
    assert f"kdtune search {spec} --resume --results {results}" in err
    assert "Traceback" not in err + out and "GCS" not in err
    done_before = [t for t in records(stage) if t["state"] == COMPLETE]
    assert len(done_before) < 6  # the signal came while runs were left
    parents, _ = runs(uri, name)
    assert [p.info.status for p in parents] == ["KILLED"]

    code, out, err = finish(start(["--resume"]))
    assert code == 0, err
    result = SearchResult.load(results / name / SEARCH_FILE)
    got = sorted((t.config["schedule"], t.config["seed"], t.state) for t in result.confirmations)
    best = result.best
    assert best is not None and best.reported_schedule != "fixed:0.75"
    # the search's best point, the seed default and α = 1, each with seeds 1 and 2, once
    references = (best.reported_schedule, "fixed:0.75", "fixed:0")
    assert got == sorted((spec, seed, COMPLETE) for spec in references for seed in (1, 2))
    study = optuna.load_study(study_name=name, storage=str(result.study_storage))
    confirmed = [t for t in study.trials if t.user_attrs.get("stage") == "confirm"]
    assert sorted((t.user_attrs["schedule"], t.user_attrs["seed"]) for t in confirmed) == [
        (s, seed) for s, seed, _ in got
    ]
    parents, trials = runs(uri, name)
    assert [p.info.status for p in parents] == ["FINISHED"]
    confirm_runs = [r for r in trials if r.data.tags.get("stage") == "confirm"]
    assert sorted(r.data.tags[tracking.TAG_TRIAL] for r in confirm_runs) == sorted(
        t.trial_id for t in result.confirmations
    )  # one run each, no duplicates
    assert all(r.info.status == "FINISHED" for r in confirm_runs)


# ------------------------------------------------------------------ the final logging

FINAL_CLI = CLI.replace(
    "from kdtune.cli import main",
    "import os, signal, time\nfrom kdtune import tracking\n"
    "def stopped(*args, **kwargs):\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    time.sleep(60)\n"
    "tracking.log_search_result = stopped\n"
    "from kdtune.cli import main",
)


def test_a_signal_during_the_final_logging_says_sync_completes_it(tmp_path: Path) -> None:
    """SIGTERM after the search finished, while its final logging runs: one line naming
    ``kdtune sync``, exit 143, search.json complete; the sync then completes MLflow."""
    from kdtune import api

    name = "lastword"
    spec = space_file(tmp_path, name, epochs=2, sleep=0.05)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["search", str(spec), "--no-progress", "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FINAL_CLI.format(tests=str(Path(__file__).parent)),
            *args,
            "--tracking-uri",
            uri,
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(proc)
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert code == 143, err
    assert len(lines) == 1 and f"`kdtune sync {name}` completes it" in lines[0], err
    assert "Traceback" not in err
    saved = SearchResult.load(tmp_path / "r" / name / SEARCH_FILE)
    assert sorted(t.state for t in saved.trials) == [COMPLETE] * len(POINTS)
    api.sync(name, results=tmp_path / "r", tracking_uri=uri)
    parents, trials = runs(uri, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == len(POINTS)


# ------------------------------------------------------------------ a fault in each stage

FAULT_CLI = CONFIRM_CLI.replace(
    "from kdtune.cli import main",
    """stage = sys.argv.pop(1)
full = OSError(28, "No space left on device")
import kdtune.tune as kt
import kdtune.tracking as tr
if stage == "trials":  # the disk fills as the trials stage ends
    real_search = kt.run_search
    def run_search(*args, **kwargs):
        real_search(*args, **kwargs)
        raise full
    kt.run_search = run_search
elif stage == "confirmation":
    def run_confirm(*args, **kwargs):
        raise full
    kt.run_confirm = run_confirm
elif stage == "track":  # the store breaks at the final logging
    def log_search_result(*args, **kwargs):
        raise RuntimeError("the tracking store broke")
    tr.log_search_result = log_search_result
from kdtune.cli import main""",
)


@pytest.mark.parametrize("stage", ["trials", "confirmation", "track"])
def test_a_fault_in_each_stage_is_one_line_and_leaves_nothing_running(
    tmp_path: Path, stage: str
) -> None:
    """A full disk as the trials or the confirmation stage ends, a tracking store that breaks
    at the final logging: one line saying what and what to do, the documented exit code (2;
    0 for the tracking, whose results are saved), no traceback, no MLflow run left RUNNING.
    (The prepare stage's fault, a teacher that diverges, is the next test.)"""
    name = f"fault{stage}"
    spec = space_file(tmp_path, name, epochs=2, sleep=0.05)
    spec.write_text(spec.read_text() + "confirm: {top_k: 1, seeds: 1}\n")
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["search", str(spec), "--no-progress", "--results", str(results), "--tracking-uri", uri]
    proc = subprocess.Popen(
        [sys.executable, "-c", FAULT_CLI.format(tests=str(Path(__file__).parent)), stage, *args],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, out, err = finish(proc, timeout=400)
    assert "Traceback" not in err + out, err
    if stage == "track":
        assert code == 0, err
        lagged = [line for line in (out + err).splitlines() if "tracking lagged" in line]
        assert len(lagged) == 1 and "the tracking store broke" in lagged[0], out + err
        assert f"kdtune sync {name}" in lagged[0]
        # the final logging never reached the store: `kdtune sync` completes it
        code, _out, err = kdtune_run(["sync", name, "--results", str(results)], uri)
        assert code == 0, err
    else:
        assert code == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: disk full: writing the ") and "ran out of space" in last
        assert f"stopped in its {stage} stage" in last
        assert f"kdtune search {spec} --resume --results {results}" in last
    parents, trials = runs(uri, name)
    assert [p.info.status for p in parents] == ["FINISHED" if stage == "track" else "FAILED"]
    assert trials and all(r.info.status != "RUNNING" for r in trials)


def kdtune_run(args: list[str], uri: str, timeout: float = 600) -> tuple[int, str, str]:
    """The real ``kdtune ARGS --tracking-uri URI`` in a process of its own."""
    proc = subprocess.run(
        [sys.executable, "-c", "from kdtune.cli import main; main()", *args, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


DIVERGING = """
name: {name}
level: second
data: synthetic
sampler: {{type: grid, seed: 0}}
pruner: {{type: none}}
budget: {{max_epochs: 1, eval_every: 1, max_concurrent: 1}}
resources: {{cpu: 1}}
teacher: {{recipe: ground_truth, epochs: 1}}
train: {{lr: 1.0e+6, max_train_images: 16, max_val_images: 8, batch_size: 8}}
search:
  grid: [{{alpha: 0.3}}]
"""


def test_a_teacher_that_diverges_in_the_prepare_stage_is_one_line(tmp_path: Path) -> None:
    """The prepare stage's fault, as a user meets it (the real `kdtune search`, the teacher
    trained by the search itself at an absurd lr): one line naming the lr and what to do,
    exit code 2, no traceback, nothing RUNNING in MLflow (no run was started)."""
    spec = tmp_path / "diverge.yaml"
    spec.write_text(DIVERGING.format(name="diverge"))
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    code, out, err = kdtune_run(
        ["search", str(spec), "--no-progress", "--results", str(results)], uri
    )
    assert code == 2, err
    assert "Traceback" not in err + out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors == err.strip().splitlines()[-1:]
    assert "teacher: the med net" in errors[0] and "diverged (loss became" in errors[0]
    assert "at lr 1e+06: lower `lr`" in errors[0]
    client = tracking.client(uri)
    every = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert all(r.info.status != "RUNNING" for r in every)
    assert not list((results / "cache" / "teachers").glob("*/model.pt"))  # nothing cached


def test_an_interrupted_confirmation_run_resumes_mid_run(tmp_path: Path) -> None:
    """With ``confirm.eval_every`` a confirmation run checkpoints at each evaluation, as the
    search's trials do: Ctrl-C while one has reported an epoch but not ended, and ``--resume``
    continues it from there (the toy trial reports the epoch it started at), not from its first
    epoch. (By default a confirmation run evaluates once, at its end, and a killed one
    restarts: nothing to continue from.)"""
    name = "midconfirm"
    spec = space_file(tmp_path, name, epochs=6, sleep=1.0)
    spec.write_text(spec.read_text() + "confirm: {top_k: 1, seeds: 1, eval_every: 1}\n")
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["search", str(spec), "--no-progress", "--results", str(results), "--tracking-uri", uri]
    script = CONFIRM_CLI.format(tests=str(Path(__file__).parent))

    def start(extra: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, *args, *extra],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def midway() -> list[dict[str, Any]]:
        found = []
        for stage in (results / name / "confirm").rglob(SEARCH_FILE):
            found += [
                t for t in records(stage.parent) if t["state"] == RUNNING and t.get("history")
            ]
        return found

    proc = start([])
    wait_for("a confirmation run midway", lambda: bool(midway()), proc, timeout=400)
    stopped = {t["trial_id"] for t in midway()}
    proc.send_signal(signal.SIGINT)
    code, _out, err = finish(proc, timeout=120)
    assert code == 130, err
    code, _out, err = finish(start(["--resume"]), timeout=400)
    assert code == 0, err
    result = SearchResult.load(results / name / SEARCH_FILE)
    resumed = [t for t in result.confirmations if t.trial_id in stopped]
    assert resumed and all(t.state == COMPLETE for t in resumed)
    starts = [h.get("toy/start_epoch") for t in resumed for h in t.history]
    assert max(s for s in starts if s is not None) > 1, starts
