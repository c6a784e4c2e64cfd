"""A search run with its MLflow tracking, as ``kdtune search`` runs it once the data and the
teacher are ready: :func:`kdtune.tune.run_search` with the logging around it.

- **live logging**: each trial's child run is logged as it ends, from a queue on a worker
  thread with short timeouts (:class:`~kdtune.tracking.background.BackgroundTracker`), never
  inside Ray Tune's event loop: a tracking server that is down does not slow the search.
- **final logging**: every trial diagnosed against the search's best, the parent's counts
  and the report. It is guarded: the report (and the next points written from it) never
  depend on MLflow. Where MLflow lagged, one line says so; ``--resume`` or ``kdtune sync
  NAME`` (:func:`sync_search`) brings it up to date.
- **signals**: on SIGINT or SIGTERM the search's state is saved (see
  :func:`~kdtune.tune.run_search`); trials still running end in MLflow as KILLED, and so does
  the parent; :class:`~kdtune.errors.SearchInterrupted` names the command that resumes. A
  signal during the final logging (the search itself finished and saved) says that
  ``kdtune sync NAME`` completes MLflow's record.
- **search ids**: a new search (even under a name used before, in another results folder)
  gets a new id, hence a new MLflow parent run; a resumed one keeps its own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdtune.diagnose import SearchReport, TrialSummary, diagnose_trial, search_report
from kdtune.errors import SearchInterrupted
from kdtune.results import COMPLETE, RUNNING, SEARCH_FILE, SPACE_COPY, SearchResult
from kdtune.tracking import SearchTracker, log_search_result
from kdtune.tracking.background import BackgroundTracker, short_timeouts

QUEUE_WAIT_S = 60.0  # at the end, how long the live logging may take to drain its queue
KILLED = "KILLED"  # MLflow's status of a run ended by a signal


@dataclass
class TrackedSearch:
    result: SearchResult
    report: SearchReport
    tracking_lag: str | None  # one line when MLflow lagged behind the search, else None


def run_tracked(
    space: Any,
    space_file: Path,
    *,
    root: Path,
    uri: str,
    settings: Mapping[str, Any],
    resume_command: str,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    trial_fn: Any = None,
    after_search: Callable[[SearchResult, Any, Any], SearchResult] | None = None,
) -> TrackedSearch:
    """Run the search ``space`` under ``root`` with live and final logging to ``uri``.

    ``resume_command`` is what the message of an interrupted search tells the user to run.
    ``after_search(result, live, on_abandon)`` (the confirmation stage) runs once the search
    has ended and before the final logging; ``live.log_trial(record, diagnosis)`` queues a
    run's logging, and ``on_abandon`` is the interruption's handling for a stage that cannot
    return (see :func:`kdtune.tune.driver.watch_local_ray`).
    """
    from kdtune.tune import run_search

    search_id = _search_id(root / space.name, resume)
    with short_timeouts(uri):
        tracker = SearchTracker(uri, root, space.name, search_id)
        tracker.start(Path(space_file), settings)
        live = BackgroundTracker(tracker)
        best: list[float] = []

        def on_trial_end(record: Any) -> None:  # on Tune's event loop: queue, return
            value = record.value(space.metric)
            if value is not None and record.state == COMPLETE:
                best.append(value)
            live.log_trial(record, diagnose_trial(record, max(best, default=None)))

        def interrupted(exc: SearchInterrupted) -> SearchInterrupted:
            """MLflow told of the interruption (trials and parent KILLED); the one line."""
            live.close(QUEUE_WAIT_S)
            note = ""
            if isinstance(exc.result, SearchResult):
                lag = _log_final(exc.result, uri, root, space_file, settings, status=KILLED)
                note = f" (MLflow lags: {lag})" if lag else ""
            name = signal.Signals(exc.signum).name
            return SearchInterrupted(
                exc.signum,
                f"search {space.name!r} interrupted by {name}; its state is saved: continue "
                f"it with `{resume_command}`{note}",
                exc.result,
            )

        try:
            result = run_search(
                space,
                results=root,
                address=address,
                resume=resume,
                trial_fn=trial_fn,
                on_trial_end=on_trial_end,
                progress=progress,
                search_id=search_id,
                on_abandon=interrupted,
            )
            if after_search is not None:  # the confirmation stage: interrupted like the search
                result = after_search(result, live, interrupted)
        except SearchInterrupted as exc:
            raise interrupted(exc) from None
        try:  # the search's results are saved; a signal now leaves only MLflow behind
            with _signals_raise():
                drained = live.close(QUEUE_WAIT_S)
                lag = _log_final(result, uri, root, space_file, settings)
        except SearchInterrupted as exc:
            name = signal.Signals(exc.signum).name
            raise SearchInterrupted(
                exc.signum,
                f"search {space.name!r} finished and is saved, but {name} stopped its final "
                f"logging to MLflow; `kdtune sync {space.name}` completes it",
                result,
            ) from None
    if lag is None and (live.lagged or not drained):
        lag = (
            f"tracking lagged: {len(live.missed) or 'some'} trial(s) were not logged while the "
            f"search ran ({live.error or 'the tracking queue did not drain'}); the final "
            "logging caught up"
        )
    return TrackedSearch(result, report_of(result), lag)


def sync_search(folder: Path, uri: str, root: Path, settings: Mapping[str, Any]) -> str:
    """Bring MLflow up to date with the search in ``folder`` (its ``search.json``): every
    trial's child run, metrics and tags, none twice; the parent's counts and report. Trials
    an interrupted search left running end KILLED. Returns the parent run id."""
    result = SearchResult.load(folder / SEARCH_FILE)
    status = KILLED if any(t.state == RUNNING for t in result.trials) else ""
    with short_timeouts(uri):
        parent, _ = log_search_result(
            result, uri, root, space_file=folder / SPACE_COPY, settings=settings, status=status
        )
    return parent


def report_of(result: SearchResult) -> SearchReport:
    """The search report: every trial diagnosed against the search's best (what MLflow's
    tags say too, see :func:`kdtune.tracking.log_search_result`)."""
    best = result.best
    best_ap = best.value(result.metric) if best is not None else None
    return search_report(
        [
            TrialSummary(
                record.trial_id,
                record.reported_schedule,
                record.state,
                record.value(),
                diagnose_trial(record, best_ap),
            )
            for record in result.trials
        ]
    )


def _log_final(
    result: SearchResult,
    uri: str,
    root: Path,
    space_file: Path,
    settings: Mapping[str, Any],
    status: str = "",
) -> str | None:
    """The final logging, guarded: None when done, else one line saying what to run."""
    try:
        log_search_result(
            result, uri, root, space_file=Path(space_file), settings=settings, status=status
        )
    except SearchInterrupted:
        raise  # a signal, not a tracking failure: the caller says what it stopped
    except Exception as exc:  # the search's results never depend on its tracking
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return (
            f"tracking lagged: MLflow at {uri} did not take the search's final logging "
            f"({error}); `kdtune sync {result.name}` brings it up to date"
        )
    return None


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise :class:`SearchInterrupted` (in the main thread; the
    handlers are left alone elsewhere), so that the caller can say what they interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise SearchInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _search_id(folder: Path, resume: bool) -> str:
    """A resumed search's own id (none for one started before ids), else a new one."""
    if not resume:
        return uuid.uuid4().hex
    try:
        return SearchResult.load(folder / SEARCH_FILE).search_id
    except (OSError, ValueError, TypeError, KeyError):
        return ""
