"""Logging a search to MLflow, from the driver: a parent run per search and a nested child run
per trial (params, per-epoch metrics, tags for state and diagnosis, artifacts)."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.checks import is_number
from kdtune.errors import KdtuneError
from kdtune.results import (
    COMPLETE,
    CONFIRM_STAGE,
    FAILED,
    PRUNED,
    RUNNING,
    SearchResult,
    TrialRecord,
)
from kdtune.schedules import parse_schedule, words
from kdtune.tracking.links import (
    SHARED_VIEW_TAG_PREFIX,
    TRIALS_VIEW_KEY,
    trials_view_tag,
    write_trials_view,
)
from kdtune.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FINAL_AP_METRIC,
    MAX_PARAM,
    MAX_TAG,
    NOTE_TAG,
    PARENT_TAG,
    RUN_STATUS,
    TAG_DIAGNOSIS,
    TAG_DIVERGED,
    TAG_EPOCHS_RUN,
    TAG_KIND,
    TAG_NEXT,
    TAG_REASON,
    TAG_RECOMMENDATION,
    TAG_SEARCH,
    TAG_SEARCH_ID,
    TAG_STATE,
    TAG_TRIAL,
    TAG_VERDICT,
    TRIAL_PARAM_KEYS,
    artifact_root,
    client,
    experiment_name,
    search_runs,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from kdtune.diagnose import Diagnosis, SearchReport, Thresholds


@dataclass
class _Child:
    run_id: str
    state: str
    status: str
    diagnosis: tuple[str, str] = ("", "")  # its diagnosis tags: label, reason


class SearchTracker:
    """Logs one search: a parent run, one nested child per trial, the report at the end.

    Use from the driver: ``start`` once (again on resume), ``log_trial`` whenever a trial
    ends (any order, any time), ``finish`` at the end.
    """

    def __init__(self, uri: str, results: Path, search_name: str, search_id: str = "") -> None:
        if not search_name:
            raise KdtuneError("search name: must not be empty")
        self.uri = uri
        self.results = Path(results)
        self.search = search_name
        self.search_id = search_id  # a new parent run per search id, never an older search's
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._mlflow: MlflowClient | None = None
        self._children: dict[str, _Child] = {}

    @property
    def client(self) -> MlflowClient:
        if self._mlflow is None:
            self._mlflow = client(self.uri, self.results)
        return self._mlflow

    # -- the parent run

    def start(self, space_file: Path | None, settings: Mapping[str, Any]) -> str:
        """Create (or, on resume, reopen) the experiment and the parent run; returns its id."""
        self.experiment_id = self._experiment()
        parent = self._find_parent()
        if parent is None:
            tags = {TAG_KIND: "search", TAG_SEARCH: self.search}
            if self.search_id:
                tags[TAG_SEARCH_ID] = self.search_id
            run = self.client.create_run(self.experiment_id, run_name=self.search, tags=tags)
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
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the tag
                self.client.set_experiment_tag(
                    found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            write_trials_view(self.client, str(found.experiment_id))  # one an older kdtune made
            return str(found.experiment_id)
        root = artifact_root(self.uri, self.results)
        location = None if root is None else str(root / _safe_folder(self.search))
        tags = {
            EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
            SHARED_VIEW_TAG_PREFIX + TRIALS_VIEW_KEY: trials_view_tag(),
        }
        return str(self.client.create_experiment(name, artifact_location=location, tags=tags))

    def _find_parent(self) -> Run | None:
        wanted = f"tags.`{TAG_KIND}` = 'search'"
        if self.search_id:  # this search's own parent; an earlier search of its name is not
            wanted += f" and tags.`{TAG_SEARCH_ID}` = '{self.search_id}'"
        runs = search_runs(self.client, [self._require_experiment()], wanted)
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
        runs = search_runs(
            self.client,
            [self._require_experiment()],
            f"tags.`{PARENT_TAG}` = '{self._require_parent()}'",
        )
        children: dict[str, _Child] = {}
        # a trial's finished run last, so that it is the one kept
        for run in sorted(runs, key=lambda r: (r.info.status != "RUNNING", r.info.start_time)):
            trial = run.data.tags.get(TAG_TRIAL)
            if trial:
                if trial in children:  # a call that timed out on the client but went through
                    self.client.delete_run(children[trial].run_id)
                state = run.data.tags.get(TAG_STATE, "")
                said = (run.data.tags.get(TAG_DIAGNOSIS, ""), run.data.tags.get(TAG_REASON, ""))
                children[trial] = _Child(run.info.run_id, state, run.info.status, said)
        return children

    # -- one child run per trial

    def logged_trials(self) -> dict[str, str]:
        """Trial id → child run id, for the trials logged so far."""
        return {trial: child.run_id for trial, child in self._children.items()}

    def log_trial(
        self, record: TrialRecord, diagnosis: Diagnosis | None = None, *, status: str = ""
    ) -> str:
        """Log a trial as a nested child run and end it with its state's status (or
        ``status``: KILLED for a trial an interrupted search leaves running).

        A trial already logged in the same, final state is skipped (its run id is returned),
        its diagnosis tags updated where they changed (the search's best moved since); one
        logged in another state (e.g. ``running`` before, ``complete`` now) or left half
        logged by a crash is replaced.
        """
        parent = self._require_parent()
        old = self._children.get(record.trial_id)
        if old is not None:
            if old.status != "RUNNING" and old.state == record.state and not status:
                self._update_diagnosis(old, record, diagnosis)
                return old.run_id
            self.client.delete_run(old.run_id)
            del self._children[record.trial_id]
        status = status or RUN_STATUS.get(record.state, "")
        if not status:
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
        self._children[record.trial_id] = _Child(
            run_id, record.state, status, _diagnosis_tags(record, diagnosis)
        )
        return run_id

    def _update_diagnosis(
        self, child: _Child, record: TrialRecord, diagnosis: Diagnosis | None
    ) -> None:
        """Rewrite a logged trial's tags and diagnosis.json where its diagnosis changed, so
        that MLflow says what the search report says."""
        said = _diagnosis_tags(record, diagnosis)
        if diagnosis is None or child.diagnosis == said:
            return
        _log_batch(self.client, child.run_id, tags=trial_tags(record, diagnosis))
        with tempfile.TemporaryDirectory() as tmp:
            path = _write_json(Path(tmp) / "diagnosis.json", diagnosis.to_dict())
            self.client.log_artifact(child.run_id, str(path))
        child.diagnosis = said

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
            value = best.value(result.metric)
            if value is not None:
                metrics[f"best/{result.metric}"] = value
            tags.update(_best_tags(best, self._children.get(best.trial_id)))
        if result.verdict is not None:
            metrics.update(verdict_metrics(result.verdict))
            tags.update(verdict_tags(result.verdict))
        if result.withheld:
            tags["kdtune.recommended"] = f"none: {result.withheld}"
        _log_batch(self.client, parent, metrics=_metric_list(metrics.items(), step=step), tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            if _report_artifacts(result, report, Path(tmp)):
                self.client.log_artifacts(parent, tmp)
        done = counts.get(COMPLETE, 0) > 0
        self.client.set_terminated(parent, "FINISHED" if done else "FAILED")

    def end(self, status: str) -> None:
        """End the parent run with ``status`` (KILLED: the search was interrupted; a resume
        reopens it)."""
        self.client.set_terminated(self._require_parent(), status)

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
    """A β schedule as MLflow params: ``schedule`` (the spec, the machine key), ``weighting``
    (it in words, for people: a column to pick in the runs table) and the shape's own parameters
    (:meth:`~kdtune.schedules.BetaSchedule.params`: ``alpha`` and ``beta`` of a fixed ratio,
    ``beta_start`` and ``beta_end`` of a schedule), each name ending in ``suffix``."""
    schedule = parse_schedule(spec)
    out: dict[str, Any] = {"schedule": spec, "weighting": schedule.words, **schedule.params()}
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
    tags["stage"] = record.stage  # search, or confirm: a confirmation run
    if record.round is not None:
        tags["kdtune.round"] = record.round  # a confirmation run's racing round
    if record.number is not None:
        tags["kdtune.number"] = record.number
    if record.node:
        tags["kdtune.node"] = record.node
    if record.error:
        tags["kdtune.error"] = _one_line(record.error)
    tags[NOTE_TAG] = _trial_note(record, diagnosis)
    return tags


def _diagnosis_tags(record: TrialRecord, diagnosis: Diagnosis | None) -> tuple[str, str]:
    tags = trial_tags(record, diagnosis)
    return str(tags[TAG_DIAGNOSIS]), _tag(tags[TAG_REASON])


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
    """``final/val/ap`` (the trial's value), then every numeric value of every evaluation
    (step = epoch). The final value comes first: the store keeps a run's metrics in the order
    they were first logged, and MLflow's compare view opens its plot on the first one."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    best = record.value("val/ap")
    if best is not None:
        metrics.append(Metric(FINAL_AP_METRIC, float(best), now, record.epochs_run))
    for i, row in enumerate(record.history):
        step = _step(row.get("epoch"), default=i + 1)
        for key, value in row.items():
            if key != "epoch" and is_number(value):
                metrics.append(Metric(key, float(value), now, step))
    return metrics


def _trial_artifacts(record: TrialRecord, diagnosis: Diagnosis | None, tmp: Path) -> list[Path]:
    """Write a trial's artifacts into ``tmp``: learning curves, validation keypoints (from
    its checkpoint), config, history, diagnosis, error."""
    from kdtune import plots

    paths = [_write_json(tmp / "config.json", record.config)]
    if record.history:
        title = f"{_trial_run_name(record)} ({record.state})"
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


def verdict_metrics(verdict: Mapping[str, Any]) -> dict[str, float]:
    """The confirmation's figures on the parent run: the recommendation's mean AP and its
    standard error, and ΔAP with its interval against the seed default and the runner-up."""
    top = verdict["ranking"][0]
    metrics = {"confirm/mean/val/ap": float(top["mean"]), "confirm/se/val/ap": float(top["se"])}
    roles = {"seed default": "default", "runner-up": "runner_up"}
    for c in verdict["comparisons"]:
        role = roles.get(c["role"])
        if role is None:
            continue
        metrics[f"verdict/{role}/delta_ap"] = float(c["mean"])
        metrics[f"verdict/{role}/low"] = float(c["low"])
        metrics[f"verdict/{role}/high"] = float(c["high"])
    return metrics


def verdict_tags(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict in words on the parent run: its sentence (also the run's description, so
    the runs table shows it) and the recommended schedule."""
    sentences = [c["sentence"] for c in verdict["comparisons"]] or [verdict["sentence"]]
    return {
        TAG_VERDICT: _one_line(verdict["sentence"]),
        "kdtune.recommended": verdict["recommended"],
        NOTE_TAG: "\n\n".join(sentences),
    }


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


def log_search_result(
    result: SearchResult,
    uri: str,
    results: Path,
    *,
    space_file: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    status: str = "",
) -> tuple[str, SearchReport]:
    """Log a finished (or resumed) search in one go: diagnose every trial, log the parent,
    the children and the report. Returns the parent run id and the report. With ``status``
    (KILLED: an interrupted search), trials still running and the parent end with it."""
    from kdtune.diagnose import TrialSummary, diagnose_trial, search_report

    best = result.best
    best_ap = best.value(result.metric) if best is not None else None
    tracker = SearchTracker(uri, results, result.name, result.search_id)
    parent = tracker.start(
        Path(space_file or result.space_file),
        settings or {"metric": result.metric, "mode": result.mode},
    )
    summaries = []
    for record in result.trials:
        diagnosis = diagnose_trial(record, best_ap, thresholds)
        running = status and record.state == RUNNING
        tracker.log_trial(record, diagnosis, status=status if running else "")
        summaries.append(
            TrialSummary(
                record.trial_id,
                record.reported_schedule,
                record.state,
                record.value(),
                diagnosis,
            )
        )
    for record in result.confirmations:
        tracker.log_trial(record, None)
    report = search_report(summaries)
    tracker.finish(result, report)
    if status:
        tracker.end(status)
    return parent, report


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
    return text[:MAX_PARAM]


def _tag(value: Any) -> str:
    return str(value)[:MAX_TAG]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def _safe_folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "search"


def _trial_run_name(record: TrialRecord) -> str:
    """The run's name in MLflow's tables: the trial and its weighting in words (α and β spelled
    out, or the schedule), and the state where it is not a completed one: ``trial 2 | α 0.25 /
    β 0.75``, ``trial 5 | β 0.9 → 0.5 (linear) | pruned``, ``confirm | α 0.25 / β 0.75 | seed
    3``."""
    cfg = record.config
    if record.stage == CONFIRM_STAGE:
        return f"confirm | {words(record.reported_schedule)} | seed {cfg.get('seed')}"
    head = f"trial {record.number}" if record.number is not None else record.trial_id
    parts = [head]
    if cfg.get("schedule"):
        weighting = words(str(cfg["schedule"]))
        if cfg.get("level") == "chain":
            weighting += f", then {words(str(cfg.get('schedule_second', '')))}"
        parts.append(weighting)
    if record.state in (PRUNED, FAILED):
        parts.append(record.state)
    return " | ".join(parts)


def _step(epoch: Any, default: int) -> int:
    """An evaluation's MLflow step: its epoch, or its position when the epoch is missing."""
    if is_number(epoch) and math.isfinite(float(epoch)):
        return int(epoch)
    return default
