"""Logging a search to MLflow, from the driver: a parent run per search and a nested child run
per trial (params, per-epoch metrics, tags for state and diagnosis, artifacts)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError
from kdtune.results import (
    COMPLETE,
    RUNNING,
    SearchResult,
    TrialRecord,
)
from kdtune.tracking.fields import (
    answer_tags,
    diagnosis_tags,
    param_text,
    tag_text,
    trial_artifacts,
    trial_metrics,
    trial_params,
    trial_run_name,
    trial_tags,
    verdict_metrics,
    verdict_tags,
    write_json,
)
from kdtune.tracking.links import (
    SHARED_VIEW_TAG_PREFIX,
    TRIALS_VIEW_KEY,
    trials_view_tag,
    write_trials_view,
)
from kdtune.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    PARENT_TAG,
    RUN_STATUS,
    TAG_DIAGNOSIS,
    TAG_KIND,
    TAG_REASON,
    TAG_SEARCH,
    TAG_SEARCH_ID,
    TAG_STATE,
    TAG_TRIAL,
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
            k for k, v in _flatten(settings).items() if k in known and known[k] != param_text(v)
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
            run_name=trial_run_name(record),
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
            run_id, record.state, status, diagnosis_tags(record, diagnosis)
        )
        return run_id

    def _update_diagnosis(
        self, child: _Child, record: TrialRecord, diagnosis: Diagnosis | None
    ) -> None:
        """Rewrite a logged trial's tags and diagnosis.json where its diagnosis changed, so
        that MLflow says what the search report says."""
        said = diagnosis_tags(record, diagnosis)
        if diagnosis is None or child.diagnosis == said:
            return
        _log_batch(self.client, child.run_id, tags=trial_tags(record, diagnosis))
        with tempfile.TemporaryDirectory() as tmp:
            path = write_json(Path(tmp) / "diagnosis.json", diagnosis.to_dict())
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
            trial_artifacts(record, diagnosis, Path(tmp))
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
        tags.update(answer_tags(result))
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


def _best_tags(best: TrialRecord, child: _Child | None) -> dict[str, Any]:
    tags: dict[str, Any] = {"kdtune.best_trial": best.trial_id}
    if child is not None:
        tags["kdtune.best_run_id"] = child.run_id
    for key, value in trial_params(best).items():
        tags[f"best.{key}"] = value
    return tags


def _report_artifacts(result: SearchResult, report: SearchReport | None, tmp: Path) -> list[Path]:
    from kdtune.answer import answer_text, block_of

    answer = tmp / "answer.txt"
    answer.write_text(answer_text(result) + "\n")
    paths = [answer]
    block = block_of(result)
    if block is not None:
        paths.append(write_json(tmp / "verdict.json", block))
    if report is not None:
        text = tmp / "search_report.txt"
        text.write_text(report.to_text() + "\n")
        paths += [text, write_json(tmp / "search_report.json", report.to_dict())]
    if result.best is not None:
        paths.append(write_json(tmp / "best_config.json", result.best.config))
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

    param_list = [Param(k, param_text(v)) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, tag_text(v)) for k, v in (tags or {}).items()]
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


def _safe_folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "search"
