"""MLflow logging of a search, and reading it back: the only part of kdtune that imports
mlflow.

Layout in the tracking store, one experiment per search::

    experiment  kdtune/<search>            artifacts under <results>/mlartifacts/<search>
      run       <search>                   the parent: settings, the space file, the report
        run     trial <n> | <weighting>    one nested child per trial (tag mlflow.parentRunId)

Everything is logged from the driver through :class:`mlflow.tracking.MlflowClient` (no
global active run), so trials on other nodes never talk to the tracking server. A resumed
search reuses its parent run and never logs a trial twice.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<results>/
mlflow.db``. mlflow itself is imported lazily: :func:`resolve_tracking_uri` and
:func:`check_tracking` are cheap enough to run before any work.

Modules: :mod:`~kdtune.tracking.store` (the store and its names), :mod:`~kdtune.tracking.log`
(logging a search), :mod:`~kdtune.tracking.readback` (reading it back),
:mod:`~kdtune.tracking.links` (links into the UI that land on the trials' results),
:mod:`~kdtune.tracking.server` (the UI server). Public names are re-exported here."""

from __future__ import annotations

from kdtune.tracking.fields import (
    schedule_params,
    trial_metrics,
    trial_params,
    trial_tags,
)
from kdtune.tracking.links import (
    TRIALS_VIEW_KEY,
    search_link,
    search_links,
    trials_view_state,
)
from kdtune.tracking.log import (
    SearchTracker,
    log_search_result,
)
from kdtune.tracking.readback import (
    load_trials,
    load_verdicts,
)
from kdtune.tracking.server import (
    start_ui,
    stop_ui,
    ui_url,
    wait_until_up,
)
from kdtune.tracking.store import (
    ARTIFACTS_FOLDER,
    ENV_TRACKING_URI,
    EXPERIMENT_PREFIX,
    FINAL_AP_METRIC,
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
    TRIAL_COLUMNS,
    TRIAL_PARAM_KEYS,
    artifact_root,
    check_tracking,
    client,
    experiment_name,
    is_server_uri,
    resolve_tracking_uri,
    sqlite_path,
)

__all__ = [
    "ARTIFACTS_FOLDER",
    "ENV_TRACKING_URI",
    "EXPERIMENT_PREFIX",
    "FINAL_AP_METRIC",
    "NOTE_TAG",
    "PARENT_TAG",
    "RUN_STATUS",
    "TAG_DIAGNOSIS",
    "TAG_DIVERGED",
    "TAG_EPOCHS_RUN",
    "TAG_KIND",
    "TAG_NEXT",
    "TAG_REASON",
    "TAG_RECOMMENDATION",
    "TAG_SEARCH",
    "TAG_SEARCH_ID",
    "TAG_STATE",
    "TAG_TRIAL",
    "TRIALS_VIEW_KEY",
    "TRIAL_COLUMNS",
    "TRIAL_PARAM_KEYS",
    "SearchTracker",
    "artifact_root",
    "check_tracking",
    "client",
    "experiment_name",
    "is_server_uri",
    "load_trials",
    "load_verdicts",
    "log_search_result",
    "resolve_tracking_uri",
    "schedule_params",
    "search_link",
    "search_links",
    "sqlite_path",
    "start_ui",
    "stop_ui",
    "trial_metrics",
    "trial_params",
    "trial_tags",
    "trials_view_state",
    "ui_url",
    "wait_until_up",
]
