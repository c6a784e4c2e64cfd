"""The MLflow store: where it is (``MLFLOW_TRACKING_URI``, ``--tracking-uri``, else SQLite
under the results folder), whether it answers, its client, and the names kdtune gives its
experiments, runs and tags."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, FAILED, PRUNED, RUNNING

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"


EXPERIMENT_PREFIX = "kdtune/"


ARTIFACTS_FOLDER = "mlartifacts"


# Tags: MLflow's own, then kdtune's.
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment in the view its kind names (GenAI's traces by default)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


NOTE_TAG = "mlflow.note.content"


TAG_KIND = "kdtune.kind"  # "search" (parent) or "trial" (child)


TAG_SEARCH = "kdtune.search"


TAG_TRIAL = "kdtune.trial_id"


TAG_SEARCH_ID = "kdtune.search_id"  # one search apart from earlier ones of the same name


TAG_STATE = "kdtune.state"


TAG_DIAGNOSIS = "kdtune.diagnosis"


TAG_REASON = "kdtune.reason"


TAG_RECOMMENDATION = "kdtune.recommendation"


TAG_NEXT = "kdtune.next"


TAG_DIVERGED = "kdtune.diverged"


TAG_EPOCHS_RUN = "kdtune.epochs_run"
# On the parent run: the confirmation's paired verdict, one sentence.
TAG_VERDICT = "kdtune.verdict"
# On the parent run: the search's answer as a person reads it (kdtune.answer.answer_text).
TAG_ANSWER = "kdtune.answer"


FINAL_AP_METRIC = "final/val/ap"


# A trial's state → the MLflow run status it ends with. A pruned trial ended as the search
# meant it to (Optuna's PRUNED): FINISHED, its name and ``kdtune.state`` saying "pruned"; MLflow
# draws KILLED and FAILED with the same red cross, which read as a crash.
RUN_STATUS: dict[str, str] = {
    COMPLETE: "FINISHED",
    PRUNED: "FINISHED",
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
    "val_ap",
    "diagnosis",
    "recommendation",
    "next",
    "stage",
    "seed",
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


MAX_PARAM = 6000  # MLflow's limit on a param value


MAX_TAG = 5000  # kept under MLflow's limit on a tag value


_HEALTH_TIMEOUT_S = 3.0


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


def client(uri: str, results: Path | None = None) -> MlflowClient:
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


def existing_store_client(uri: str) -> MlflowClient:
    """A client for reading: a SQLite file that does not exist yet is an error, not a new store."""
    check_tracking(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise KdtuneError(f"no tracking store at {db} (run `kdtune search` first)")
    return client(uri)


def kdtune_experiments(client: MlflowClient) -> dict[str, str]:
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


def search_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
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
