"""Reading searches back from MLflow: one row per trial, for ``kdtune compare`` and export."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError
from kdtune.tracking.store import (
    FINAL_AP_METRIC,
    PARENT_TAG,
    TAG_ANSWER,
    TAG_DIAGNOSIS,
    TAG_EPOCHS_RUN,
    TAG_KIND,
    TAG_NEXT,
    TAG_RECOMMENDATION,
    TAG_SEARCH,
    TAG_STATE,
    TAG_TRIAL,
    TAG_VERDICT,
    TRIAL_COLUMNS,
    existing_store_client,
    kdtune_experiments,
    search_runs,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def load_trials(uri: str, searches: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per trial (child run) of the given searches (default: all), columns
    :data:`TRIAL_COLUMNS`. A search name reads its latest search (a name used again, in
    another results folder, starts a new parent run); the parent run id of an earlier one
    reads that one. An unknown name raises :class:`KdtuneError`."""
    import pandas as pd

    client = existing_store_client(uri)
    experiments = kdtune_experiments(client)
    wanted = list(searches) if searches else sorted(experiments)
    rows: list[dict[str, Any]] = []
    for search in wanted:
        name, runs = search_trials(client, uri, experiments, search)
        rows += [_trial_row(name, run) for run in runs]
    frame = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    frame["number"] = frame["number"].astype("Int64")
    frame["epochs_run"] = frame["epochs_run"].astype("int64")
    frame["seed"] = frame["seed"].astype("Int64")
    if not frame.empty:
        frame = frame.sort_values(["search", "number", "trial"], na_position="last")
    return frame.reset_index(drop=True)


def search_trials(
    client: MlflowClient, uri: str, experiments: dict[str, str], search: str
) -> tuple[str, list[Run]]:
    """The search's name and its trials' runs: a search name's latest parent run, or the
    parent run of that id."""
    if search in experiments:
        exp_id = experiments[search]
        parents = search_runs(client, [exp_id], f"tags.`{TAG_KIND}` = 'search'")
        latest = max(parents, key=lambda r: r.info.start_time) if parents else None
        trials = search_runs(client, [exp_id], f"tags.`{TAG_KIND}` = 'trial'")
        if latest is None or len(parents) == 1:
            return search, trials
        return search, [r for r in trials if r.data.tags.get(PARENT_TAG) == latest.info.run_id]
    parent = _parent_run(client, search)
    if parent is None:
        known = ", ".join(sorted(experiments)) or "none yet"
        raise KdtuneError(f"unknown search {search!r} in {uri} (known searches: {known})")
    exp_id = parent.info.experiment_id
    return parent.data.tags.get(TAG_SEARCH, search), search_runs(
        client, [exp_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )


def _parent_run(client: MlflowClient, run_id: str) -> Run | None:
    """The search parent run of id ``run_id``, if there is one."""
    if not run_id.isalnum():
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # MLflow raises its own error for an unknown id
        return None
    return run if run.data.tags.get(TAG_KIND) == "search" else None


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
        "val_ap": metrics.get(FINAL_AP_METRIC, math.nan),
        "diagnosis": tags.get(TAG_DIAGNOSIS, ""),
        "recommendation": tags.get(TAG_RECOMMENDATION, ""),
        "next": tags.get(TAG_NEXT, ""),
        "stage": tags.get("stage", "search"),
        "seed": _int_or_none(params.get("seed")),
    }


def load_verdicts(uri: str, searches: Sequence[str] | None = None) -> dict[str, str]:
    """Search name → its answer as its parent run holds it (``kdtune.answer``: the block, or
    the single-seed best marked unconfirmed; a run logged by an older kdtune: its verdict
    sentence), for the searches (default: all) that have one."""
    client = existing_store_client(uri)
    experiments = kdtune_experiments(client)
    verdicts: dict[str, str] = {}
    for search in searches or sorted(experiments):
        if search not in experiments:
            continue
        parents = search_runs(client, [experiments[search]], f"tags.`{TAG_KIND}` = 'search'")
        for run in parents:
            said = run.data.tags.get(TAG_ANSWER) or run.data.tags.get(TAG_VERDICT)
            if said:
                verdicts[search] = said
                break
    return verdicts


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
