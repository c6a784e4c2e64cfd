"""MLflow logging of a search, and reading it back. The only kdtune module that imports mlflow.

Layout in the tracking store, one experiment per search::

    experiment  kdtune/<search>            artifacts under <results>/mlartifacts/<search>
      run       <search>                   the parent: settings, the space file, the report
        run     trial <n> | <schedule>     one nested child per trial (tag mlflow.parentRunId)

Everything is logged from the driver through :class:`mlflow.tracking.MlflowClient` (no
global active run), so trials on other nodes never talk to the tracking server. A resumed
search reuses its parent run and never logs a trial twice.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<results>/
mlflow.db``. mlflow itself is imported lazily: :func:`resolve_tracking_uri` and
:func:`check_tracking` are cheap enough to run before any work.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, FAILED, PRUNED, RUNNING, SearchResult, TrialRecord
from kdtune.schedules import parse_schedule

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from kdtune.diagnose import Diagnosis, SearchReport, Thresholds

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
EXPERIMENT_PREFIX = "kdtune/"
ARTIFACTS_FOLDER = "mlartifacts"

# Tags: MLflow's own, then kdtune's.
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
TAG_KIND = "kdtune.kind"  # "search" (parent) or "trial" (child)
TAG_SEARCH = "kdtune.search"
TAG_TRIAL = "kdtune.trial_id"
TAG_STATE = "kdtune.state"
TAG_DIAGNOSIS = "kdtune.diagnosis"
TAG_REASON = "kdtune.reason"
TAG_RECOMMENDATION = "kdtune.recommendation"
TAG_NEXT = "kdtune.next"
TAG_DIVERGED = "kdtune.diverged"
TAG_EPOCHS_RUN = "kdtune.epochs_run"
BEST_AP_METRIC = "best/val/ap"

# A trial's state → the MLflow run status it ends with.
RUN_STATUS: dict[str, str] = {
    COMPLETE: "FINISHED",
    PRUNED: "KILLED",
    FAILED: "FAILED",
    RUNNING: "RUNNING",
}
TRIAL_COLUMNS: tuple[str, ...] = (
    "search",
    "trial",
    "number",
    "run_id",
    "level",
    "alpha",
    "schedule",
    "epochs_run",
    "state",
    "best_ap",
    "diagnosis",
    "recommendation",
    "next",
)
# Config keys logged as params of a trial (the full config is the config.json artifact).
TRIAL_PARAM_KEYS: tuple[str, ...] = (
    "level",
    "lr",
    "batch_size",
    "weight_decay",
    "seed",
    "data",
    "epochs",
    "eval_every",
)
_MAX_PARAM = 6000  # MLflow's limit on a param value
_MAX_TAG = 5000  # kept under MLflow's limit on a tag value
_HEALTH_TIMEOUT_S = 3.0


# ------------------------------------------------------------------------------ the store


def resolve_tracking_uri(uri: str | None, results: Path) -> str:
    """The tracking URI: explicit, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``results``."""
    if uri:
        return uri
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return env
    return "sqlite:///" + str((Path(results) / "mlflow.db").resolve())


def is_server_uri(uri: str) -> bool:
    """Whether the URI names a tracking server (http or https) rather than a local store."""
    return uri.lower().startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def artifact_root(uri: str, results: Path) -> Path | None:
    """Where a local store keeps artifacts (``<results>/mlartifacts``); None for a server,
    which decides itself (it proxies uploads)."""
    return None if is_server_uri(uri) else Path(results).resolve() / ARTIFACTS_FOLDER


def check_tracking(uri: str, timeout: float = _HEALTH_TIMEOUT_S) -> None:
    """Fail fast, with one line, when the tracking store cannot be used.

    A server must answer ``GET <uri>/health`` within ``timeout`` seconds; a SQLite store
    needs a writable folder. Other schemes are left to MLflow.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise KdtuneError(f"tracking URI: expected a URI, got {uri!r}")
    if is_server_uri(uri):
        _check_server(uri, timeout)
        return
    db = sqlite_path(uri)
    if db is not None:
        _check_writable_folder(db.parent, uri)


def _check_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # it answers; the credentials are MLflow's business
            return
        raise KdtuneError(
            f"tracking server {uri} is not usable: GET /health answered HTTP {exc.code}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KdtuneError(f"tracking server {uri} is not reachable: {reason}") from None


def _check_writable_folder(folder: Path, uri: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise KdtuneError(f"tracking store {uri}: folder {existing} is not writable")


def _client(uri: str, results: Path | None = None) -> MlflowClient:
    """An MlflowClient on ``uri``; a SQLite store's folder is created first."""
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if results is not None and not is_server_uri(uri):
        Path(results).mkdir(parents=True, exist_ok=True)
    _quiet_mlflow_logs()
    # kdtune prints its own summary; MLflow's "View run ... at" lines would break --format json
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _quiet_mlflow_logs() -> None:
    """MLflow announces table creation and migrations on stderr; kdtune has its own output."""
    import logging

    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def experiment_name(search: str) -> str:
    return EXPERIMENT_PREFIX + search


# ------------------------------------------------------------------------------ logging


@dataclass
class _Child:
    run_id: str
    state: str
    status: str


class SearchTracker:
    """Logs one search: a parent run, one nested child per trial, the report at the end.

    Use from the driver: ``start`` once (again on resume), ``log_trial`` whenever a trial
    ends (any order, any time), ``finish`` at the end.
    """

    def __init__(self, uri: str, results: Path, search_name: str) -> None:
        if not search_name:
            raise KdtuneError("search name: must not be empty")
        self.uri = uri
        self.results = Path(results)
        self.search = search_name
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        self._children: dict[str, _Child] = {}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = _client(self.uri, self.results)
        return self._client

    # -- the parent run

    def start(self, space_file: Path | None, settings: Mapping[str, Any]) -> str:
        """Create (or, on resume, reopen) the experiment and the parent run; returns its id."""
        self.experiment_id = self._experiment()
        parent = self._find_parent()
        if parent is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.search,
                tags={TAG_KIND: "search", TAG_SEARCH: self.search},
            )
            self.parent_run_id = run.info.run_id
            known: dict[str, str] = {}
        else:
            self.parent_run_id = parent.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            known = dict(parent.data.params)
        self._log_settings(settings, known)
        if space_file is not None and Path(space_file).is_file():
            self.client.log_artifact(self.parent_run_id, str(space_file))
        self._children = self._load_children()
        return self.parent_run_id

    def _experiment(self) -> str:
        name = experiment_name(self.search)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise KdtuneError(
                    f"search {self.search!r}: its MLflow experiment {name!r} is deleted; "
                    "restore it in the MLflow UI or choose another search name"
                )
            return str(found.experiment_id)
        root = artifact_root(self.uri, self.results)
        location = None if root is None else str(root / _safe_folder(self.search))
        return str(self.client.create_experiment(name, artifact_location=location))

    def _find_parent(self) -> Run | None:
        runs = _search_runs(
            self.client, [self._require_experiment()], f"tags.`{TAG_KIND}` = 'search'"
        )
        return min(runs, key=lambda r: r.info.start_time) if runs else None

    def _log_settings(self, settings: Mapping[str, Any], known: Mapping[str, str]) -> None:
        params = {k: v for k, v in _flatten(settings).items() if k not in known}
        changed = sorted(
            k for k, v in _flatten(settings).items() if k in known and known[k] != _param(v)
        )
        tags = {"kdtune.changed_on_resume": ", ".join(changed)} if changed else {}
        _log_batch(self.client, self._require_parent(), params=params, tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "settings.json"
            path.write_text(json.dumps(dict(settings), indent=2, default=str))
            self.client.log_artifact(self._require_parent(), str(path))

    def _load_children(self) -> dict[str, _Child]:
        runs = _search_runs(
            self.client,
            [self._require_experiment()],
            f"tags.`{PARENT_TAG}` = '{self._require_parent()}'",
        )
        children: dict[str, _Child] = {}
        for run in sorted(runs, key=lambda r: r.info.start_time):
            trial = run.data.tags.get(TAG_TRIAL)
            if trial:
                state = run.data.tags.get(TAG_STATE, "")
                children[trial] = _Child(run.info.run_id, state, run.info.status)
        return children

    # -- one child run per trial

    def logged_trials(self) -> dict[str, str]:
        """Trial id → child run id, for the trials logged so far."""
        return {trial: child.run_id for trial, child in self._children.items()}

    def log_trial(self, record: TrialRecord, diagnosis: Diagnosis | None = None) -> str:
        """Log a trial as a nested child run and end it with its state's status.

        A trial already logged in the same, final state is skipped (its run id is returned);
        one logged in another state (e.g. ``running`` before, ``complete`` now) or left half
        logged by a crash is replaced.
        """
        parent = self._require_parent()
        old = self._children.get(record.trial_id)
        if old is not None:
            if old.status != "RUNNING" and old.state == record.state:
                return old.run_id
            self.client.delete_run(old.run_id)
            del self._children[record.trial_id]
        status = RUN_STATUS.get(record.state)
        if status is None:
            raise KdtuneError(f"trial {record.trial_id}: unknown state {record.state!r}")
        run = self.client.create_run(
            self._require_experiment(),
            start_time=int((time.time() - max(record.wall_s, 0.0)) * 1000),
            run_name=_trial_run_name(record),
            tags={
                PARENT_TAG: parent,
                TAG_KIND: "trial",
                TAG_SEARCH: self.search,
                TAG_TRIAL: record.trial_id,
            },
        )
        run_id = run.info.run_id
        try:
            self._fill_trial(run_id, record, diagnosis)
            if status != "RUNNING":
                self.client.set_terminated(run_id, status)
        except BaseException:
            self.client.delete_run(run_id)  # never leave a half-logged trial behind
            raise
        self._children[record.trial_id] = _Child(run_id, record.state, status)
        return run_id

    def _fill_trial(self, run_id: str, record: TrialRecord, diagnosis: Diagnosis | None) -> None:
        _log_batch(
            self.client,
            run_id,
            params=trial_params(record),
            tags=trial_tags(record, diagnosis),
            metrics=trial_metrics(record),
        )
        with tempfile.TemporaryDirectory() as tmp:
            _trial_artifacts(record, diagnosis, Path(tmp))
            self.client.log_artifacts(run_id, tmp)

    # -- the end of the search

    def finish(self, result: SearchResult, report: SearchReport | None = None) -> None:
        """Log the best trial, the counts and the report on the parent, and end it:
        FINISHED, or FAILED when no trial completed."""
        parent = self._require_parent()
        counts = result.counts()
        step = len(result.trials)
        metrics = {f"trials/{state}": float(n) for state, n in counts.items()}
        metrics["trials/total"] = float(len(result.trials))
        metrics["trials/epochs_spent"] = float(result.epochs_spent())
        tags: dict[str, Any] = {"kdtune.counts": ", ".join(f"{n} {s}" for s, n in counts.items())}
        best = result.best
        if best is not None:
            value = best.best_value(result.metric, result.mode)
            if value is not None:
                metrics[f"best/{result.metric}"] = value
            tags.update(_best_tags(best, self._children.get(best.trial_id)))
        _log_batch(self.client, parent, metrics=_metric_list(metrics.items(), step=step), tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            if _report_artifacts(result, report, Path(tmp)):
                self.client.log_artifacts(parent, tmp)
        done = counts.get(COMPLETE, 0) > 0
        self.client.set_terminated(parent, "FINISHED" if done else "FAILED")

    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("SearchTracker.start() must be called first")
        return self.parent_run_id

    def _require_experiment(self) -> str:
        if self.experiment_id is None:
            raise RuntimeError("SearchTracker.start() must be called first")
        return self.experiment_id


def trial_params(record: TrialRecord) -> dict[str, Any]:
    """A trial's MLflow params: level, α or the schedule's parameters (both levels for a
    chain), training settings, the trial id and Optuna number, and what the sampler chose."""
    cfg = record.config
    params: dict[str, Any] = {k: cfg[k] for k in TRIAL_PARAM_KEYS if k in cfg}
    params["trial_id"] = record.trial_id
    if record.number is not None:
        params["number"] = record.number
    if "schedule" in cfg:
        params.update(schedule_params(cfg["schedule"]))
    if cfg.get("level") == "chain" and "schedule_second" in cfg:
        params.update(schedule_params(cfg["schedule_second"], suffix="_second"))
    for key, value in record.params.items():
        params[f"sampled.{key}"] = value
    return params


def schedule_params(spec: str, suffix: str = "") -> dict[str, Any]:
    """``fixed:0.75`` → schedule, shape, alpha 0.25, beta 0.75; adaptive specs → schedule,
    shape, beta_start, beta_end, warmup (and at, for step schedules)."""
    sched = parse_schedule(spec)
    out: dict[str, Any] = {"schedule": spec, "shape": sched.shape}
    if sched.shape == "fixed":
        out["alpha"] = round(1.0 - sched.beta_start, 10)
        out["beta"] = sched.beta_start
    else:
        out.update(beta_start=sched.beta_start, beta_end=sched.beta_end, warmup=sched.warmup)
        if sched.shape == "step":
            out["at"] = sched.at
    return {key + suffix: value for key, value in out.items()}


def trial_tags(record: TrialRecord, diagnosis: Diagnosis | None) -> dict[str, Any]:
    """State, diagnosis, recommendation, next schedules and bookkeeping, as run tags."""
    tags: dict[str, Any] = {
        TAG_STATE: record.state,
        TAG_DIVERGED: str(bool(record.diverged)).lower(),
        TAG_EPOCHS_RUN: record.epochs_run,
        "kdtune.wall_s": f"{record.wall_s:.1f}",
        TAG_DIAGNOSIS: diagnosis.label if diagnosis else "none",
        TAG_RECOMMENDATION: _one_line(diagnosis.recommendation) if diagnosis else "",
        TAG_REASON: _one_line(diagnosis.reason) if diagnosis else "",
        TAG_NEXT: ", ".join(diagnosis.next_schedules) if diagnosis else "",
    }
    if record.number is not None:
        tags["kdtune.number"] = record.number
    if record.node:
        tags["kdtune.node"] = record.node
    if record.error:
        tags["kdtune.error"] = _one_line(record.error)
    tags[NOTE_TAG] = _trial_note(record, diagnosis)
    return tags


def _trial_note(record: TrialRecord, diagnosis: Diagnosis | None) -> str:
    """The run's description in the MLflow UI (Markdown)."""
    lines = [f"**{record.state}** after {record.epochs_run} epochs"]
    if diagnosis is not None:
        lines.append(f"**diagnosis**: {diagnosis.label}: {diagnosis.reason}")
        lines.append(f"**recommendation**: {diagnosis.recommendation}")
        if diagnosis.next_schedules:
            lines.append("**try next**: " + ", ".join(diagnosis.next_schedules))
    if record.error:
        lines.append(f"**error**: {_one_line(record.error)}")
    return "\n\n".join(lines)


def trial_metrics(record: TrialRecord) -> list[Any]:
    """Every numeric value of every evaluation (step = epoch), and ``best/val/ap``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for i, row in enumerate(record.history):
        step = _step(row.get("epoch"), default=i + 1)
        for key, value in row.items():
            if key != "epoch" and _is_number(value):
                metrics.append(Metric(key, float(value), now, step))
    best = record.best_value("val/ap", "max")
    if best is not None:
        metrics.append(Metric(BEST_AP_METRIC, float(best), now, record.epochs_run))
    return metrics


def _trial_artifacts(record: TrialRecord, diagnosis: Diagnosis | None, tmp: Path) -> list[Path]:
    """Write a trial's artifacts into ``tmp``: learning curves, validation keypoints (from
    its checkpoint), config, history, diagnosis, error."""
    from kdtune import plots

    paths = [_write_json(tmp / "config.json", record.config)]
    if record.history:
        title = f"{record.trial_id}: {record.config.get('schedule', '')} ({record.state})"
        paths.append(
            plots.learning_curves(record.history, tmp / "learning_curves.png", title=title)
        )
        paths.append(_write_json(tmp / "history.json", record.history))
    if record.checkpoint_dir:
        keypoints = Path(record.checkpoint_dir) / "val_keypoints.png"
        if keypoints.is_file():
            paths.append(Path(shutil.copyfile(keypoints, tmp / keypoints.name)))
    if diagnosis is not None:
        paths.append(_write_json(tmp / "diagnosis.json", diagnosis.to_dict()))
    if record.error:
        path = tmp / "error.txt"
        path.write_text(record.error)
        paths.append(path)
    return paths


def _best_tags(best: TrialRecord, child: _Child | None) -> dict[str, Any]:
    tags: dict[str, Any] = {"kdtune.best_trial": best.trial_id}
    if child is not None:
        tags["kdtune.best_run_id"] = child.run_id
    for key, value in trial_params(best).items():
        tags[f"best.{key}"] = value
    return tags


def _report_artifacts(result: SearchResult, report: SearchReport | None, tmp: Path) -> list[Path]:
    paths = []
    if report is not None:
        text = tmp / "search_report.txt"
        text.write_text(report.to_text() + "\n")
        paths += [text, _write_json(tmp / "search_report.json", report.to_dict())]
    if result.best is not None:
        paths.append(_write_json(tmp / "best_config.json", result.best.config))
    return paths


def diagnose_record(
    record: TrialRecord,
    best_ap_in_search: float | None = None,
    thresholds: Thresholds | None = None,
) -> Diagnosis:
    """Diagnose a trial from its history (a chain is judged by its second level, the one
    that reports)."""
    from kdtune.diagnose import DEFAULT_THRESHOLDS, diagnose

    cfg = record.config
    level = str(cfg.get("level", "second"))
    key = "schedule_second" if level == "chain" else "schedule"
    epochs = cfg.get("epochs")
    return diagnose(
        record.history,
        str(cfg.get(key, "fixed:0.75")),
        level=level,
        max_epochs=epochs if isinstance(epochs, int) and epochs > 0 else None,
        state=record.state,
        best_ap_in_search=best_ap_in_search,
        thresholds=thresholds or DEFAULT_THRESHOLDS,
    )


def log_search_result(
    result: SearchResult,
    uri: str,
    results: Path,
    *,
    space_file: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    thresholds: Thresholds | None = None,
) -> tuple[str, SearchReport]:
    """Log a finished (or resumed) search in one go: diagnose every trial, log the parent,
    the children and the report. Returns the parent run id and the report."""
    from kdtune.diagnose import TrialSummary, search_report

    best = result.best
    best_ap = best.best_value(result.metric, result.mode) if best is not None else None
    tracker = SearchTracker(uri, results, result.name)
    parent = tracker.start(
        Path(space_file or result.space_file),
        settings or {"metric": result.metric, "mode": result.mode},
    )
    summaries = []
    for record in result.trials:
        diagnosis = diagnose_record(record, best_ap, thresholds)
        tracker.log_trial(record, diagnosis)
        schedule = record.config.get(
            "schedule_second" if record.config.get("level") == "chain" else "schedule",
            "fixed:0.75",
        )
        summaries.append(
            TrialSummary(record.trial_id, schedule, record.state, record.best_value(), diagnosis)
        )
    report = search_report(summaries)
    tracker.finish(result, report)
    return parent, report


# ------------------------------------------------------------------------------ reading back


def list_searches(uri: str) -> list[str]:
    """The names of the searches in the store (experiments named ``kdtune/<name>``)."""
    client = _existing_store_client(uri)
    return sorted(_kdtune_experiments(client))


def load_trials(uri: str, searches: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per trial (child run) of the given searches (default: all), columns
    :data:`TRIAL_COLUMNS`. An unknown search name raises :class:`KdtuneError`."""
    import pandas as pd

    client = _existing_store_client(uri)
    experiments = _kdtune_experiments(client)
    wanted = list(searches) if searches else sorted(experiments)
    unknown = [s for s in wanted if s not in experiments]
    if unknown:
        known = ", ".join(sorted(experiments)) or "none yet"
        raise KdtuneError(f"unknown search {unknown[0]!r} in {uri} (known searches: {known})")
    rows: list[dict[str, Any]] = []
    for search in wanted:
        runs = _search_runs(client, [experiments[search]], f"tags.`{TAG_KIND}` = 'trial'")
        rows += [_trial_row(search, run) for run in runs]
    frame = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    frame["number"] = frame["number"].astype("Int64")
    frame["epochs_run"] = frame["epochs_run"].astype("int64")
    if not frame.empty:
        frame = frame.sort_values(["search", "number", "trial"], na_position="last")
    return frame.reset_index(drop=True)


def _trial_row(search: str, run: Run) -> dict[str, Any]:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    chain = params.get("level") == "chain"
    schedule = params.get("schedule", "")
    if chain:
        schedule = f"{schedule} -> {params.get('schedule_second', '')}"
    return {
        "search": search,
        "trial": tags.get(TAG_TRIAL, params.get("trial_id", "")),
        "number": _int_or_none(params.get("number")),
        "run_id": run.info.run_id,
        "level": params.get("level", ""),
        "alpha": math.nan if chain else _float_or_nan(params.get("alpha")),
        "schedule": schedule,
        "epochs_run": _int_or_none(tags.get(TAG_EPOCHS_RUN)) or 0,
        "state": tags.get(TAG_STATE, ""),
        "best_ap": metrics.get(BEST_AP_METRIC, math.nan),
        "diagnosis": tags.get(TAG_DIAGNOSIS, ""),
        "recommendation": tags.get(TAG_RECOMMENDATION, ""),
        "next": tags.get(TAG_NEXT, ""),
    }


def _existing_store_client(uri: str) -> MlflowClient:
    """A client for reading: a SQLite file that does not exist yet is an error, not a new store."""
    check_tracking(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise KdtuneError(f"no tracking store at {db} (run `kdtune search` first)")
    return _client(uri)


def _kdtune_experiments(client: MlflowClient) -> dict[str, str]:
    """Search name → experiment id, for the active experiments named ``kdtune/...``."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_experiments(
            filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'", page_token=token
        )
        for exp in page:
            found[exp.name[len(EXPERIMENT_PREFIX) :]] = str(exp.experiment_id)
        token = page.token
        if not token:
            return found


def _search_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """All active runs matching the filter, across pages."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


# ------------------------------------------------------------------------------ the UI


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
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 (the child holds it)
    try:
        return subprocess.Popen(
            cmd,
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


# ------------------------------------------------------------------------------ helpers


def _log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    metrics: Sequence[Any] = (),
) -> None:
    """``log_batch`` in chunks within MLflow's limits (100 params, 100 tags, 1000 metrics)."""
    from mlflow.entities import Param, RunTag

    param_list = [Param(k, _param(v)) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, _tag(v)) for k, v in (tags or {}).items()]
    for i in range(0, len(param_list), 100):
        client.log_batch(run_id, params=param_list[i : i + 100])
    for i in range(0, len(tag_list), 100):
        client.log_batch(run_id, tags=tag_list[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=list(metrics[i : i + 1000]))


def _metric_list(items: Iterable[tuple[str, float]], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in items]


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b`` keys; lists stay whole (as their text)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return text[:_MAX_PARAM]


def _tag(value: Any) -> str:
    return str(value)[:_MAX_TAG]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def _safe_folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "search"


def _trial_run_name(record: TrialRecord) -> str:
    head = f"trial {record.number}" if record.number is not None else record.trial_id
    cfg = record.config
    schedule = cfg.get("schedule", "")
    if cfg.get("level") == "chain":
        schedule = f"{schedule} -> {cfg.get('schedule_second', '')}"
    return f"{head} | {schedule}" if schedule else head


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _step(epoch: Any, default: int) -> int:
    """An evaluation's MLflow step: its epoch, or its position when the epoch is missing."""
    if _is_number(epoch) and math.isfinite(float(epoch)):
        return int(epoch)
    return default


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
