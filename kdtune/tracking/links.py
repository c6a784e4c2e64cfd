"""Links into the MLflow UI that land on what decides a search: per trial its final val/ap, α
and β (or the schedule in words), state and diagnosis.

What MLflow 3's UI reads, and so what kdtune gives it:

- The runs page (``#/experiments/<id>/runs``) takes its filter and sort from the URL, but not
  its columns: those live in the browser's storage, or in a *shared view*, an experiment tag
  ``mlflow.sharedViewState.<key>`` holding the page's state as JSON (in an envelope with a name:
  a saved view, which the page's "Views" menu lists), which the page loads when the URL carries
  ``viewStateShareKey=<key>`` (and no filter or sort of its own). kdtune writes one such view per
  search experiment, :data:`TRIALS_VIEW_KEY`: the trials alone, best final val/ap first, the
  columns of :data:`TRIALS_COLUMNS`, every run shown.
- The compare view (``#/compare-runs?runs=[...]&experiments=[...]``) reads nothing else from its
  URL: its parallel-coordinates plot opens on the first three parameters that differ between
  the runs, in alphabetical order (``alpha``, ``beta`` lead, or ``beta_end``, ``beta_start``
  for schedules), coloured by the first metric the runs share, in the order the store returns
  them; the trial's run logs ``final/val/ap`` first for that (:func:`~kdtune.tracking.log.
  trial_metrics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from kdtune.errors import KdtuneError
from kdtune.tracking.readback import search_trials
from kdtune.tracking.store import (
    FINAL_AP_METRIC,
    TAG_DIAGNOSIS,
    TAG_KIND,
    TAG_STATE,
    existing_store_client,
    is_server_uri,
    kdtune_experiments,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


# Where `kdtune ui` serves a local store unless told otherwise.
DEFAULT_UI = "http://127.0.0.1:5000"


SHARED_VIEW_PARAM = "viewStateShareKey"  # the runs page's URL parameter naming a shared view


SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the experiment tag holding it


TRIALS_VIEW_KEY = "kdtune-trials"


TRIALS_FILTER = f"tags.`{TAG_KIND}` = 'trial'"


TRIALS_ORDER = f"metrics.`{FINAL_AP_METRIC}`"


def column(kind: str, key: str) -> str:
    """A runs-table column as MLflow names it: ``metrics.`val/ap```, ``params.`alpha```."""
    return f"{kind}.`{key}`"


# The columns of the trials view beside MLflow's own (the run name, which spells the weighting
# out, schedules included, and the start time with the run's status), with their widths in
# pixels: at 1600 pixels wide all of them fit beside MLflow's side panels. The weighting in
# words is a param too (``weighting``), one click away under "Columns".
TRIALS_COLUMNS: tuple[tuple[str, int], ...] = (
    (column("metrics", FINAL_AP_METRIC), 125),
    (column("params", "alpha"), 52),
    (column("params", "beta"), 52),
    (column("tags", TAG_STATE), 90),
    (column("tags", TAG_DIAGNOSIS), 140),
)


RUN_NAME_COLUMN = column("attributes", "Run Name")


RUN_NAME_WIDTH = 230


def trials_view_state() -> str:
    """The trials view as the runs page's shared-view JSON: its search facets (filter, sort)
    and its UI state (columns; the order and widths of those it lists, the run name's
    included; every run visible)."""
    keys = [key for key, _ in TRIALS_COLUMNS]
    widths = {RUN_NAME_COLUMN: RUN_NAME_WIDTH, **dict(TRIALS_COLUMNS)}
    state = {
        "searchFilter": TRIALS_FILTER,
        "orderByKey": TRIALS_ORDER,
        "orderByAsc": False,
        "selectedColumns": keys,
        "columnOrder": list(widths),
        "columnWidths": widths,
        "runsHiddenMode": "SHOW_ALL",
    }
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)


# The same filter and sort as URL facets: the runs link where the view cannot be written.
TRIALS_FACETS = urlencode(
    {"searchFilter": TRIALS_FILTER, "orderByKey": TRIALS_ORDER, "orderByAsc": "false"},
    quote_via=quote,
)


TRIALS_VIEW_NAME = "kdtune: trials, best final val/ap first"


def trials_view_tag(now_ms: int | None = None) -> str:
    """The experiment tag's value: the view in MLflow's saved-view envelope (its name, when it
    was saved, its state), so that the runs page's "Views" menu lists it by name too."""
    saved = int(time.time() * 1000) if now_ms is None else now_ms
    envelope = {
        "name": TRIALS_VIEW_NAME,
        "createdAt": saved,
        "updatedAt": saved,
        "state": trials_view_state(),
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def saved_view_state(tag: str | None) -> str | None:
    """The state a view tag holds (an envelope's, or a bare state's), or None."""
    if not tag:
        return None
    try:
        value = json.loads(tag)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("state"), str):
        return str(value["state"])
    return tag


def write_trials_view(client: MlflowClient, experiment_id: str) -> None:
    """Store the trials view on the experiment (a tag), where it is missing or another."""
    key = SHARED_VIEW_TAG_PREFIX + TRIALS_VIEW_KEY
    experiment = client.get_experiment(experiment_id)
    if saved_view_state(experiment.tags.get(key)) != trials_view_state():
        client.set_experiment_tag(experiment_id, key, trials_view_tag())


def runs_link(base_url: str, experiment_id: str, *, view: bool = True) -> str:
    """The experiment's runs page on the trials view (or, without it, filtered and sorted)."""
    page = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{page}?{SHARED_VIEW_PARAM}={TRIALS_VIEW_KEY}" if view else f"{page}?{TRIALS_FACETS}"


def compare_link(base_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's compare view of the given runs."""
    runs = json.dumps(list(run_ids), separators=(",", ":"))
    experiments = json.dumps([experiment_id], separators=(",", ":"))
    base = base_url.rstrip("/")
    return f"{base}/#/compare-runs?runs={quote(runs)}&experiments={quote(experiments)}"


def search_links(uri: str, base_url: str, searches: Sequence[str] | None = None) -> dict[str, Any]:
    """Links into the MLflow UI at ``base_url`` for each search (default: all) of the store:
    ``runs`` (its trials view, written on the experiment where it is missing: a store logged
    by an older kdtune), ``compare`` (the compare view of its trials) and ``trials`` (how
    many)."""
    from mlflow.exceptions import MlflowException

    client = existing_store_client(uri)
    experiments = kdtune_experiments(client)
    links: dict[str, Any] = {}
    for search in searches or sorted(experiments):
        if search not in experiments:
            continue
        exp_id = experiments[search]
        _, runs = search_trials(client, uri, experiments, search)
        try:
            write_trials_view(client, exp_id)
            view = True
        except MlflowException:  # a server that does not let this user write tags
            view = False
        links[search] = {
            "runs": runs_link(base_url, exp_id, view=view),
            "compare": compare_link(base_url, exp_id, [run.info.run_id for run in runs]),
            "trials": len(runs),
        }
    return links


def search_link(uri: str, search: str) -> dict[str, Any] | None:
    """The links of one search just run: on its tracking server, or where ``kdtune ui`` serves
    a local store; None where the store cannot be read."""
    base = uri if is_server_uri(uri) else DEFAULT_UI
    try:
        return search_links(uri, base, [search]).get(search)
    except KdtuneError:
        return None
