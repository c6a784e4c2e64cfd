"""MLflow logging and read-back, against real MLflow stores (SQLite, and a real server).

Creating a fresh SQLite store runs all of MLflow's migrations (7-13 s on two busy cores), so
one empty store is made per session and copied for each use; still, every test that touches a
store is marked ``slow`` (CI runs them: ``pytest -m slow tests/test_tracking.py``). The real
``mlflow server`` test takes about a minute, most of it the server's start.
"""

from __future__ import annotations

import http.server
import json
import math
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from helpers import free_port
from hypothesis import given
from hypothesis import strategies as st

from kdtune import tracking
from kdtune.diagnose import Diagnosis
from kdtune.errors import KdtuneError
from kdtune.results import SearchResult, TrialRecord
from kdtune.schedules import parse_schedule

VOCABULARY = (
    "train/student_loss",
    "train/distill_loss",
    "train/loss",
    "train/beta",
    "val/loss",
    "val/ap",
    "val/ap50",
    "val/ap75",
    "val/apm",
    "val/apl",
    "val/ar",
    "perf/images_per_s",
)
SETTINGS = {
    "level": "second",
    "data": "synthetic",
    "metric": "val/ap",
    "sampler": "tpe",
    "pruner": "median",
    "budget": {"trials": 3, "epochs": 5},
    "resources": {"cpu": 1},
}


# ------------------------------------------------------------------------------ fabrication


def history(epochs: int, ap_step: float, beta: float = 0.75) -> list[dict[str, float]]:
    """A plausible curve: losses falling as 1/epoch, AP rising by ``ap_step`` per epoch."""
    rows = []
    for e in range(1, epochs + 1):
        row = {key: 0.5 for key in VOCABULARY}
        row.update(
            {
                "epoch": e,
                "train/loss": 1.0 / e,
                "train/student_loss": 0.6 / e,
                "train/distill_loss": 0.4 / e,
                "train/beta": beta,
                "val/loss": 1.2 / e,
                "val/ap": round(ap_step * e, 6),
                "perf/images_per_s": 140.0 + e,
            }
        )
        rows.append(row)
    return rows


def config(schedule: str, level: str = "second", **extra: Any) -> dict[str, Any]:
    return {
        "level": level,
        "schedule": schedule,
        "schedule_second": "fixed:0.75",
        "data": "synthetic",
        "epochs": 5,
        "batch_size": 32,
        "lr": 0.002,
        "seed": 7,
        **extra,
    }


def records(tmp: Path) -> list[TrialRecord]:
    """One complete trial with a keypoints picture, one pruned, one failed (NaN loss)."""
    ckpt = tmp / "ckpt-a"
    ckpt.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_suffix(".py"), ckpt / "val_keypoints.png")  # any bytes
    failed_history = history(2, 0.01)
    failed_history[-1]["train/loss"] = math.nan
    return [
        TrialRecord(
            "a_00000", "complete", config("fixed:0.75"), {"alpha": 0.25}, 0, history(5, 0.1),
            checkpoint_dir=str(ckpt), wall_s=30.0, node="node-1",
        ),
        TrialRecord(
            "a_00001", "pruned", config("linear:0.9:0.5,warmup=0.1"), {}, 1, history(2, 0.05),
        ),
        TrialRecord(
            "a_00002", "failed", config("fixed:0.5"), {"alpha": 0.5}, 2, failed_history,
            error="RuntimeError: loss is nan\n  at step 3", diverged=True,
        ),
    ]  # fmt: skip


def diagnosis(label: str) -> Diagnosis:
    return Diagnosis(
        label,
        f"because {label}",
        f"do something about {label}\nsecond line",
        ["fixed:0.8", "fixed:0.85"] if label == "overfitting" else [],
        {"ratio": 0.5},
    )


DIAGNOSES = {"a_00000": "overfitting", "a_00001": "plateau", "a_00002": "diverged"}


# ------------------------------------------------------------------------------ stores


def _template_db(factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database, made once per session (shared by modules)."""
    path = factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tracking.client("sqlite:///" + str(path)).search_experiments()
    return path


def new_store(factory: pytest.TempPathFactory, name: str) -> tuple[str, Path]:
    """A fresh store (a copy of the template) and its results folder."""
    results = factory.mktemp(name)
    shutil.copyfile(_template_db(factory), results / "mlflow.db")
    return tracking.resolve_tracking_uri(None, results), results


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One search logged to a SQLite store: parent, three children, report."""
    uri, results = new_store(tmp_path_factory, "logged")
    space = results / "space.yaml"
    space.write_text("name: demo\nlevel: second\n")
    trials = records(results)
    tracker = tracking.SearchTracker(uri, results, "demo")
    parent = tracker.start(space, SETTINGS)
    run_ids = {t.trial_id: tracker.log_trial(t, diagnosis(DIAGNOSES[t.trial_id])) for t in trials}
    result = SearchResult("demo", str(space), str(results), trials=trials)
    tracker.finish(result, _report(result))
    return {
        "uri": uri,
        "results": results,
        "parent": parent,
        "run_ids": run_ids,
        "trials": trials,
        "client": tracking.client(uri),
        "space": space,
    }


def _report(result: SearchResult) -> Any:
    from kdtune.diagnose import TrialSummary, search_report

    return search_report(
        [
            TrialSummary(
                t.trial_id,
                t.config["schedule"],
                t.state,
                t.value(),
                diagnosis(DIAGNOSES[t.trial_id]),
            )
            for t in result.trials
        ]
    )


def _artifacts(client: Any, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id)}


def _children(client: Any, experiment_id: str, parent: str) -> list[Any]:
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")


# ------------------------------------------------------------------------------ the URI


def test_uri_precedence_explicit_then_env_then_sqlite_in_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tracking.resolve_tracking_uri("http://h:1", tmp_path) == "http://h:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:2")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://env:2"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = tracking.resolve_tracking_uri(None, tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.sqlite_path(uri) == tmp_path.resolve() / "mlflow.db"
    assert tracking.artifact_root(uri, tmp_path) == tmp_path.resolve() / "mlartifacts"
    assert tracking.artifact_root("https://h", tmp_path) is None


def test_unreachable_server_fails_fast_with_one_line() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(
        KdtuneError, match=rf"tracking server http://127.0.0.1:{port} is not reachable"
    ):
        tracking.check_tracking(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 3.5


class _Handler(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self) -> None:
        self.send_response(self.code)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_server_that_answers_health_passes_and_an_error_status_does_not(
    fake_server: tuple[str, type[_Handler]],
) -> None:
    url, handler = fake_server
    tracking.check_tracking(url + "/")
    handler.code = 503
    with pytest.raises(KdtuneError, match="answered HTTP 503"):
        tracking.check_tracking(url)
    handler.code = 401  # answers, wants credentials: MLflow's client has them
    tracking.check_tracking(url)


def test_sqlite_store_in_an_unwritable_place_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdtuneError, match="is not writable"):
        tracking.check_tracking(f"sqlite:///{blocker}/sub/mlflow.db")
    tracking.check_tracking(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert not (tmp_path / "new").exists()  # checking creates nothing


# ------------------------------------------------------------------------------ params


def test_schedule_params_fixed_and_adaptive() -> None:
    assert tracking.schedule_params("fixed:0.75") == {
        "schedule": "fixed:0.75",
        "weighting": "α 0.25 / β 0.75",
        "shape": "fixed",
        "alpha": 0.25,
        "beta": 0.75,
    }
    assert tracking.schedule_params("step:0.9:0.5,warmup=0.1,at=0.3", suffix="_second") == {
        "schedule_second": "step:0.9:0.5,warmup=0.1,at=0.3",
        "weighting_second": "β 0.9 → 0.5 (step at 0.3, warm-up 0.1)",
        "shape_second": "step",
        "beta_start_second": 0.9,
        "beta_end_second": 0.5,
        "warmup_second": 0.1,
        "at_second": 0.3,
    }


@given(
    st.sampled_from(["linear", "cosine"]),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 0.99),
)
def test_schedule_params_match_the_parsed_schedule(
    shape: str, start: float, end: float, warmup: float
) -> None:
    spec = f"{shape}:{start!r}:{end!r},warmup={warmup!r}"
    params = tracking.schedule_params(spec)
    sched = parse_schedule(spec)
    assert (params["beta_start"], params["beta_end"], params["warmup"]) == (
        sched.beta_start,
        sched.beta_end,
        sched.warmup,
    )
    assert "alpha" not in params


@given(st.floats(0, 1))
def test_fixed_alpha_and_beta_sum_to_one(beta: float) -> None:
    params = tracking.schedule_params(f"fixed:{beta!r}")
    assert params["alpha"] + params["beta"] == pytest.approx(1.0, abs=1e-9)


def test_chain_trial_logs_both_levels() -> None:
    record = TrialRecord(
        "c", "complete", config("fixed:0.7", level="chain", schedule_second="linear:0.9:0.5")
    )
    params = tracking.trial_params(record)
    assert params["alpha"] == pytest.approx(0.3)
    assert params["schedule_second"] == "linear:0.9:0.5"
    assert params["beta_start_second"] == 0.9
    assert params["level"] == "chain"


# ------------------------------------------------------------------------------ SQLite store


@pytest.mark.slow
def test_parent_run_holds_settings_space_file_report_and_best(logged: dict[str, Any]) -> None:
    client = logged["client"]
    run = client.get_run(logged["parent"])
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "kdtune/demo"
    # opens in MLflow 3's model-training view, not the GenAI traces view
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location.endswith("mlartifacts/demo")
    assert run.info.run_name == "demo"
    assert run.info.status == "FINISHED"
    assert run.data.tags["kdtune.kind"] == "search"
    assert run.data.tags["kdtune.search"] == "demo"
    assert run.data.tags["kdtune.best_trial"] == "a_00000"
    assert run.data.tags["kdtune.best_run_id"] == logged["run_ids"]["a_00000"]
    assert run.data.tags["best.alpha"] == "0.25"
    params = run.data.params
    assert params["sampler"] == "tpe" and params["pruner"] == "median"
    assert params["budget.trials"] == "3" and params["resources.cpu"] == "1"
    # the parent: the best trial's value (its final val/ap)
    assert run.data.metrics["best/val/ap"] == pytest.approx(0.5)
    assert run.data.metrics["trials/complete"] == 1.0
    assert run.data.metrics["trials/pruned"] == 1.0
    assert run.data.metrics["trials/failed"] == 1.0
    names = _artifacts(client, logged["parent"])
    assert {
        "space.yaml",
        "settings.json",
        "search_report.txt",
        "search_report.json",
        "best_config.json",
    } <= names
    local = Path(run.info.artifact_uri) / "search_report.txt"
    assert "3 trials" in local.read_text()


@pytest.mark.slow
def test_one_nested_child_per_trial_with_matching_status(logged: dict[str, Any]) -> None:
    client = logged["client"]
    exp_id = client.get_run(logged["parent"]).info.experiment_id
    children = {
        r.data.tags["kdtune.trial_id"]: r for r in _children(client, exp_id, logged["parent"])
    }
    assert set(children) == {"a_00000", "a_00001", "a_00002"}
    status = {k: r.info.status for k, r in children.items()}
    # pruned (a_00001) is an end the search meant, not a crash: FINISHED, named so
    assert status == {"a_00000": "FINISHED", "a_00001": "FINISHED", "a_00002": "FAILED"}
    names = {k: r.info.run_name for k, r in children.items()}
    assert names == {
        "a_00000": "trial 0 | α 0.25 / β 0.75",
        "a_00001": "trial 1 | β 0.9 → 0.5 (linear, warm-up 0.1) | pruned",
        "a_00002": "trial 2 | α 0.5 / β 0.5 | failed",
    }
    for trial_id, run in children.items():
        assert run.data.tags["kdtune.diagnosis"] == DIAGNOSES[trial_id]
        assert "\n" not in run.data.tags["kdtune.recommendation"]
        assert run.data.tags["kdtune.search"] == "demo"
        assert run.data.params["trial_id"] == trial_id


@pytest.mark.slow
def test_child_params_tags_and_artifacts(logged: dict[str, Any]) -> None:
    client = logged["client"]
    done = client.get_run(logged["run_ids"]["a_00000"])
    p = done.data.params
    assert (p["level"], p["alpha"], p["beta"], p["schedule"]) == (
        "second",
        "0.25",
        "0.75",
        "fixed:0.75",
    )
    assert (p["lr"], p["batch_size"], p["seed"], p["data"], p["epochs"]) == (
        "0.002",
        "32",
        "7",
        "synthetic",
        "5",
    )
    assert (p["number"], p["sampled.alpha"]) == ("0", "0.25")
    t = done.data.tags
    assert t["kdtune.state"] == "complete"
    assert t["kdtune.next"] == "fixed:0.8, fixed:0.85"
    assert t["kdtune.recommendation"] == "do something about overfitting second line"
    assert t["kdtune.diverged"] == "false"
    assert t["kdtune.node"] == "node-1"
    assert "overfitting" in t["mlflow.note.content"]
    assert done.info.end_time - done.info.start_time >= 29_000  # the trial's wall time
    assert {
        "learning_curves.png",
        "val_keypoints.png",
        "config.json",
        "history.json",
        "diagnosis.json",
    } <= _artifacts(client, done.info.run_id)
    config = json.loads((Path(done.info.artifact_uri) / "config.json").read_text())
    assert config == logged["trials"][0].config
    png = (Path(done.info.artifact_uri) / "learning_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")

    pruned = client.get_run(logged["run_ids"]["a_00001"]).data.params
    assert (pruned["shape"], pruned["beta_start"], pruned["beta_end"], pruned["warmup"]) == (
        "linear",
        "0.9",
        "0.5",
        "0.1",
    )
    assert "alpha" not in pruned
    failed = client.get_run(logged["run_ids"]["a_00002"])
    assert failed.data.tags["kdtune.diverged"] == "true"
    assert failed.data.tags["kdtune.error"] == "RuntimeError: loss is nan at step 3"
    assert "error.txt" in _artifacts(client, failed.info.run_id)
    assert "val_keypoints.png" not in _artifacts(client, failed.info.run_id)  # fmt: skip


@pytest.mark.slow
def test_metric_histories_step_by_epoch(logged: dict[str, Any]) -> None:
    client = logged["client"]
    run_id = logged["run_ids"]["a_00000"]
    ap = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/ap"))
    assert ap == [(e, pytest.approx(0.1 * e)) for e in range(1, 6)]
    logged_keys = set(client.get_run(run_id).data.metrics)
    assert set(VOCABULARY) <= logged_keys
    assert client.get_run(run_id).data.metrics["final/val/ap"] == pytest.approx(0.5)
    nan = client.get_metric_history(logged["run_ids"]["a_00002"], "train/loss")
    assert [m.step for m in sorted(nan, key=lambda m: m.step)] == [1, 2]
    assert math.isnan(max(nan, key=lambda m: m.step).value)


@pytest.mark.slow
def test_load_trials_one_row_per_child(logged: dict[str, Any]) -> None:
    df = tracking.load_trials(logged["uri"], ["demo"])
    assert list(df.columns) == list(tracking.TRIAL_COLUMNS)
    assert list(df["trial"]) == ["a_00000", "a_00001", "a_00002"]
    row = df.iloc[0]
    assert (row["search"], row["level"], row["state"], row["diagnosis"]) == (
        "demo",
        "second",
        "complete",
        "overfitting",
    )
    assert row["alpha"] == pytest.approx(0.25)
    assert row["val_ap"] == pytest.approx(0.5)
    assert row["epochs_run"] == 5
    assert row["run_id"] == logged["run_ids"]["a_00000"]
    assert math.isnan(df.iloc[1]["alpha"])
    assert df.iloc[1]["schedule"] == "linear:0.9:0.5,warmup=0.1"
    assert list(df["state"]) == ["complete", "pruned", "failed"]


@pytest.mark.slow
def test_unknown_search_is_named_with_the_known_ones(logged: dict[str, Any]) -> None:
    with pytest.raises(KdtuneError, match=r"unknown search 'nope' .*known searches: demo"):
        tracking.load_trials(logged["uri"], ["demo", "nope"])


def test_missing_store_is_an_error_and_not_created(tmp_path: Path) -> None:
    uri = tracking.resolve_tracking_uri(None, tmp_path)
    with pytest.raises(KdtuneError, match="no tracking store"):
        tracking.load_trials(uri)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_resumed_search_reuses_the_parent_and_never_duplicates(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    uri, results = new_store(tmp_path_factory, "resume")
    trials = records(results)
    first = tracking.SearchTracker(uri, results, "again")
    parent = first.start(None, SETTINGS)
    running = TrialRecord("a_00001", "running", trials[1].config, history=trials[1].history[:1])
    ids = [first.log_trial(trials[0], diagnosis("overfitting")), first.log_trial(running)]
    first.finish(SearchResult("again", "", str(results), trials=[trials[0], running]))

    second = tracking.SearchTracker(uri, results, "again")
    assert second.start(None, {**SETTINGS, "budget": {"trials": 6, "epochs": 5}}) == parent
    assert tracking.client(uri).get_run(parent).info.status == "RUNNING"
    assert second.log_trial(trials[0], diagnosis("overfitting")) == ids[0]  # same state: skipped
    replaced = second.log_trial(trials[1], diagnosis("plateau"))  # running → pruned: replaced
    assert replaced != ids[1]
    second.log_trial(trials[2], diagnosis("diverged"))
    second.finish(SearchResult("again", "", str(results), trials=trials))

    client = tracking.client(uri)
    exp_id = client.get_run(parent).info.experiment_id
    assert len(client.search_runs([exp_id], "tags.`kdtune.kind` = 'search'")) == 1
    children = _children(client, exp_id, parent)
    assert sorted(r.data.tags["kdtune.trial_id"] for r in children) == [
        "a_00000",
        "a_00001",
        "a_00002",
    ]
    assert client.get_run(ids[1]).info.lifecycle_stage == "deleted"
    parent_run = client.get_run(parent)
    assert parent_run.data.params["budget.trials"] == "3"  # params are immutable in MLflow
    assert parent_run.data.tags["kdtune.changed_on_resume"] == "budget.trials"
    assert len(tracking.load_trials(uri, ["again"])) == 3


@pytest.mark.slow
def test_search_without_a_completed_trial_ends_failed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    uri, results = new_store(tmp_path_factory, "nothing")
    failed = records(results)[2]
    tracker = tracking.SearchTracker(uri, results, "broken")
    parent = tracker.start(None, {})
    tracker.log_trial(failed, None)
    tracker.finish(SearchResult("broken", "", str(results), trials=[failed]))
    run = tracking.client(uri).get_run(parent)
    assert run.info.status == "FAILED"
    assert "kdtune.best_trial" not in run.data.tags
    row = tracking.load_trials(uri).iloc[0]
    assert (row["state"], row["diagnosis"], row["val_ap"]) == (
        "failed",
        "none",
        pytest.approx(0.02),
    )


@pytest.mark.slow
def test_log_search_result_diagnoses_every_trial(tmp_path_factory: pytest.TempPathFactory) -> None:
    uri, results = new_store(tmp_path_factory, "oneshot")
    trials = records(results)
    result = SearchResult("oneshot", "", str(results), trials=trials)
    _, report = tracking.log_search_result(result, uri, results, settings=SETTINGS)
    df = tracking.load_trials(uri, ["oneshot"])
    assert set(df["diagnosis"]) <= {
        "diverged",
        "pruned",
        "overfitting",
        "underfitting",
        "slow_convergence",
        "plateau",
        "healthy",
    }
    assert df.loc[df["state"] == "failed", "diagnosis"].item() == "diverged"
    assert df.loc[df["state"] == "pruned", "diagnosis"].item() == "pruned"
    assert report.n_trials == 3
    assert report.best is not None and report.best.trial_id == "a_00000"


def test_start_ui_refuses_a_server_uri_and_a_busy_port(tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match="already a server"):
        tracking.start_ui("http://127.0.0.1:5000")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(KdtuneError, match=f"port {port} on 127.0.0.1 is not free"):
            tracking.start_ui(tracking.resolve_tracking_uri(None, tmp_path), port=port)


# ------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (one worker, SQLite in a temporary folder) on 127.0.0.1."""
    uri, results = new_store(tmp_path_factory, "server")
    port = free_port()
    process = tracking.start_ui(uri, port=port, workers=1, log_file=results / "server.log")
    try:
        url = tracking.ui_url("127.0.0.1", port)
        tracking.wait_until_up(url, timeout=180, process=process)
        yield url
    finally:
        tracking.stop_ui(process)
    assert process.returncode is not None


@pytest.mark.slow
def test_search_logged_through_a_real_server_shows_in_rest_api_and_ui(
    server: str, tmp_path: Path
) -> None:
    import requests

    tracking.check_tracking(server)
    trials = records(tmp_path)
    result = SearchResult("remote", "", str(tmp_path), trials=trials)
    parent, _ = tracking.log_search_result(result, server, tmp_path / "client", settings=SETTINGS)

    exp = requests.get(
        f"{server}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "kdtune/remote"},
        timeout=10,
    ).json()["experiment"]
    runs = requests.post(
        f"{server}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [exp["experiment_id"]], "max_results": 100},
        timeout=10,
    ).json()["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs}
    assert [rid for rid, t in tags.items() if t.get("kdtune.kind") == "search"] == [parent]
    children = [rid for rid, t in tags.items() if t.get("mlflow.parentRunId") == parent]
    assert len(children) == 3
    status = {
        tags[r["info"]["run_id"]]["kdtune.trial_id"]: r["info"]["status"]
        for r in runs
        if r["info"]["run_id"] in children
    }
    assert status == {"a_00000": "FINISHED", "a_00001": "FINISHED", "a_00002": "FAILED"}

    done = next(rid for rid in children if tags[rid]["kdtune.trial_id"] == "a_00000")
    listed = requests.get(
        f"{server}/api/2.0/mlflow/artifacts/list", params={"run_id": done}, timeout=10
    ).json()
    assert {"learning_curves.png", "val_keypoints.png", "config.json"} <= {
        f["path"] for f in listed["files"]
    }
    png = requests.get(
        f"{server}/get-artifact",
        params={"path": "learning_curves.png", "run_uuid": done},
        timeout=10,
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    page = requests.get(server + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()

    df = tracking.load_trials(server, ["remote"])
    assert sorted(df["trial"]) == ["a_00000", "a_00001", "a_00002"]
    assert df.loc[df["trial"] == "a_00000", "val_ap"].item() == pytest.approx(0.5)


@pytest.mark.slow
def test_kdtune_ui_runs_without_the_job_runner_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`kdtune ui` as a user starts it: 2 server processes (no huey job runner), and SIGTERM
    (docker stop, systemd) ends it and its whole process group, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdtune.cli", "ui", "--port", str(port), "--results", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.5)
        time.sleep(3)  # let a job runner start, were it on

        def group_of_server() -> list[int]:
            """The processes in the mlflow server's process group (start_ui makes one)."""
            stats = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cmd = (entry / "cmdline").read_bytes().split(b"\0")
                        pgrp = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
                    except (OSError, ValueError, IndexError):
                        continue
                    stats[int(entry.name)] = (cmd, pgrp)
            leaders = [
                pid
                for pid, (cmd, _) in stats.items()
                if b"server" in cmd and str(port).encode() in cmd and b"mlflow" in b" ".join(cmd)
            ]
            groups = {stats[pid][1] for pid in leaders}
            return [pid for pid, (_, pgrp) in stats.items() if pgrp in groups]

        running = group_of_server()
        # the server and its one uvicorn worker; with MLflow's job runner it would be 10
        assert 1 <= len(running) <= 2, running
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        time.sleep(1)
        assert group_of_server() == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_mlflow_says_the_diagnosis_the_search_report_says(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A trial logged live is diagnosed against the best so far; at the end of the search its
    tags take the report's diagnosis (against the search's final best), in the same run."""
    from kdtune.diagnose import diagnose_trial

    uri, results = new_store(tmp_path_factory, "agree")
    trials = records(results)
    live = tracking.SearchTracker(uri, results, "agree")
    live.start(None, SETTINGS)
    ids = {t.trial_id: live.log_trial(t, diagnosis("plateau")) for t in trials}  # stale
    result = SearchResult("agree", "", str(results), trials=trials)
    _, report = tracking.log_search_result(result, uri, results, settings=SETTINGS)

    best = result.best.value() if result.best else None
    client = tracking.client(uri)
    said: dict[str, int] = {}
    for record in trials:
        run = client.get_run(ids[record.trial_id])  # the same run, its tags rewritten
        expected = diagnose_trial(record, best)
        assert run.data.tags[tracking.TAG_DIAGNOSIS] == expected.label
        assert run.data.tags[tracking.TAG_REASON] == " ".join(expected.reason.split())
        if record.state == "complete":  # the report's spread counts complete trials
            said[expected.label] = said.get(expected.label, 0) + 1
    assert {k: v for k, v in report.counts.items() if v} == said
    labels = {client.get_run(i).data.tags[tracking.TAG_DIAGNOSIS] for i in ids.values()}
    assert "plateau" not in labels and "diverged" in labels


# ------------------------------------------------------------------------------ UI links


def test_the_trials_view_shows_the_columns_that_decide() -> None:
    """The runs page's shared view: the trials alone, best final val/ap first, and the final
    val/ap, α, β, state and diagnosis beside the run's name (MLflow's column ids)."""
    state = json.loads(tracking.trials_view_state())
    assert state["searchFilter"] == "tags.`kdtune.kind` = 'trial'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`final/val/ap`", False)
    assert state["selectedColumns"] == [
        "metrics.`final/val/ap`",
        "params.`alpha`",
        "params.`beta`",
        "tags.`kdtune.state`",
        "tags.`kdtune.diagnosis`",
    ]
    assert state["columnOrder"][0] == "attributes.`Run Name`"
    assert set(state["columnWidths"]) == set(state["columnOrder"])
    assert state["runsHiddenMode"] == "SHOW_ALL"


def test_the_view_columns_are_what_a_trial_logs(tmp_path: Path) -> None:
    """Each column of the view names a param, tag or metric a fixed-ratio trial logs; its
    final val/ap is its first metric (the compare view's plot opens on it)."""
    trial = records(tmp_path)[0]
    logged = {
        "params": set(tracking.trial_params(trial)),
        "tags": set(tracking.trial_tags(trial, diagnosis("overfitting"))),
        "metrics": {m.key for m in tracking.trial_metrics(trial)},
    }
    for key in json.loads(tracking.trials_view_state())["selectedColumns"]:
        kind, _, name = key.partition(".")
        assert name.strip("`") in logged[kind], key
    first = tracking.trial_metrics(trial)[0]
    assert (first.key, first.value, first.step) == ("final/val/ap", pytest.approx(0.5), 5)


@pytest.mark.slow
def test_search_links_land_on_the_trials_view(logged: dict[str, Any]) -> None:
    client = logged["client"]
    experiment = client.get_experiment_by_name("kdtune/demo")
    key = "mlflow.sharedViewState." + tracking.TRIALS_VIEW_KEY
    saved = json.loads(experiment.tags[key])  # written with the experiment, a named saved view
    assert saved["name"] == "kdtune: trials, best final val/ap first"
    assert saved["state"] == tracking.trials_view_state()
    assert isinstance(saved["createdAt"], int) and saved["updatedAt"] == saved["createdAt"]
    client.delete_experiment_tag(experiment.experiment_id, key)  # a store of an older kdtune

    links = tracking.search_links(logged["uri"], "http://ui:5000/")["demo"]
    exp_id = experiment.experiment_id
    assert (
        links["runs"]
        == f"http://ui:5000/#/experiments/{exp_id}/runs?viewStateShareKey=kdtune-trials"
    )
    rewritten = client.get_experiment(exp_id).tags[key]
    assert json.loads(rewritten)["state"] == tracking.trials_view_state()
    tracking.search_links(logged["uri"], "http://ui:5000/")  # the same view: left as it is
    assert client.get_experiment(exp_id).tags[key] == rewritten
    ids = sorted(logged["run_ids"].values())
    assert links["trials"] == 3
    compare = links["compare"]
    assert compare.startswith("http://ui:5000/#/compare-runs?runs=")
    listed = json.loads(unquote(compare.split("runs=", 1)[1].split("&", 1)[0]))
    assert sorted(listed) == ids
    assert tracking.search_link(logged["uri"], "demo")["runs"].startswith(  # type: ignore[index]
        "http://127.0.0.1:5000/#/experiments/"
    )


@pytest.mark.slow
def test_runs_link_falls_back_to_url_facets_where_the_view_cannot_be_written(
    logged: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses the tag (permissions): the link filters and sorts in its URL."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = logged["client"]
    exp_id = client.get_experiment_by_name("kdtune/demo").experiment_id
    client.delete_experiment_tag(exp_id, "mlflow.sharedViewState." + tracking.TRIALS_VIEW_KEY)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise MlflowException("Permission denied", error_code="PERMISSION_DENIED")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refuse)
    runs = tracking.search_links(logged["uri"], "http://ui:5000")["demo"]["runs"]
    assert runs == (
        f"http://ui:5000/#/experiments/{exp_id}/runs?searchFilter="
        + "tags.%60kdtune.kind%60%20%3D%20%27trial%27"
        + "&orderByKey=metrics.%60final%2Fval%2Fap%60&orderByAsc=false"
    )
