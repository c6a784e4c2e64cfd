"""The tracking stage: the search in MLflow (:mod:`kdtune.tracking`).

- **live**: each trial's child run is logged as it ends, from a queue on a worker thread with
  short timeouts (:class:`~kdtune.tracking.background.BackgroundTracker`), never inside Ray
  Tune's event loop: a tracking server that is down does not slow the search.
- **final**: every trial diagnosed against the search's best, the parent's counts and the
  report. Guarded: the report (and the next points written from it) never depend on MLflow;
  what lagged is one line (:mod:`kdtune.search.interruption`), and ``--resume`` or
  ``kdtune sync NAME`` (:func:`sync`) brings MLflow up to date.
- **stopped**: trials still running end KILLED, and so does the parent.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.results import COMPLETE, RUNNING, SEARCH_FILE, SPACE_COPY, SearchResult, TrialRecord
from kdtune.search.interruption import (
    InterruptionPolicy,
    signals_raise,
    tracking_lagged,
    tracking_lost,
)
from kdtune.search.records import Prepared, Tracked

QUEUE_WAIT_S = 60.0  # at the end, how long the live logging may take to drain its queue
KILLED = "KILLED"  # MLflow's status of a run ended by a signal
FAILED = "FAILED"  # MLflow's status of a run a fault ended


def timeouts(uri: str) -> AbstractContextManager[None]:
    """MLflow's short HTTP timeouts while the search runs."""
    from kdtune.tracking.background import short_timeouts

    return short_timeouts(uri)


class LiveTracking:
    """The search's parent run, started, and its trials' runs queued as they end."""

    def __init__(self, prepared: Prepared) -> None:
        from kdtune.tracking import SearchTracker
        from kdtune.tracking.background import BackgroundTracker

        self.prepared = prepared
        space = prepared.space
        tracker = SearchTracker(prepared.uri, prepared.root, space.name, prepared.search_id)
        tracker.start(prepared.space_file, prepared.settings)
        self.tracker = tracker
        self.queue = BackgroundTracker(tracker)
        self._best: list[float] = []

    def trial_ended(self, record: TrialRecord) -> None:
        """On Tune's event loop: diagnosed against the best so far, queued, returns."""
        from kdtune.diagnose import diagnose_trial

        value = record.value(self.prepared.space.metric)
        if value is not None and record.state == COMPLETE:
            self._best.append(value)
        self.queue.log_trial(record, diagnose_trial(record, max(self._best, default=None)))

    def confirm_run_ended(self, record: TrialRecord) -> None:
        self.queue.log_trial(record, None)

    def stopped(self, result: SearchResult | None) -> str | None:
        """A signal stopped the search: the queue drained, the final logging with running
        trials and the parent KILLED; one line when MLflow lags."""
        return self._end(result, KILLED)

    def failed(self, result: SearchResult | None) -> str | None:
        """A fault (not a signal) ended a stage: the queue drained, trials still running and
        the parent FAILED, so that nothing is left RUNNING; one line when MLflow lags."""
        return self._end(result, FAILED)

    def _end(self, result: SearchResult | None, status: str) -> str | None:
        self.queue.close(QUEUE_WAIT_S)
        if result is not None:
            return _log_final(self.prepared, result, status=status)
        try:  # no records yet: the parent alone
            self.tracker.end(status)
        except Exception as exc:
            return tracking_lost(self.prepared.uri, self.prepared.space.name, exc)
        return None

    def finish(self, result: SearchResult, policy: InterruptionPolicy) -> Tracked:
        """The final logging; a signal now leaves only MLflow behind."""
        try:
            with signals_raise():
                drained = self.queue.close(QUEUE_WAIT_S)
                lag = _log_final(self.prepared, result)
        except SearchInterrupted as exc:
            raise policy.stopped_final_logging(exc, result) from None
        if lag is None and (self.queue.lagged or not drained):
            lag = tracking_lagged(len(self.queue.missed), self.queue.error)
        return Tracked(result, lag)


def sync(
    name: str, *, results: Path | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Bring MLflow up to date with search ``name``'s own records (its ``search.json``): every
    trial's child run, metrics and tags, none twice; the parent's counts and report. Trials
    an interrupted search left running end KILLED. Returns the search, the store and the
    parent run id."""
    from kdtune.paths import results_dir
    from kdtune.search.prepare import space_settings
    from kdtune.space import parse_space
    from kdtune.tracking import check_tracking, log_search_result, resolve_tracking_uri
    from kdtune.tracking.background import short_timeouts

    root = results_dir(results)
    folder = root / name
    if not (folder / SEARCH_FILE).is_file():
        raise KdtuneError(f"sync: no search named {name!r} under {root} (no {SEARCH_FILE})")
    uri = resolve_tracking_uri(tracking_uri, root)
    check_tracking(uri)
    copy = folder / SPACE_COPY
    settings = space_settings(parse_space(copy.read_text(), file=str(copy)))
    result = SearchResult.load(folder / SEARCH_FILE)
    status = KILLED if any(t.state == RUNNING for t in result.trials) else ""
    with short_timeouts(uri):
        parent, _ = log_search_result(
            result, uri, root, space_file=copy, settings=settings, status=status
        )
    return {"search": name, "tracking_uri": uri, "parent_run_id": parent}


def _log_final(prepared: Prepared, result: SearchResult, status: str = "") -> str | None:
    """The final logging, guarded: None when done, else one line saying what to run."""
    from kdtune.tracking import log_search_result

    try:
        log_search_result(
            result,
            prepared.uri,
            prepared.root,
            space_file=prepared.space_file,
            settings=prepared.settings,
            status=status,
        )
    except SearchInterrupted:
        raise  # a signal, not a tracking failure: the caller says what it stopped
    except Exception as exc:  # the search's results never depend on its tracking
        return tracking_lost(prepared.uri, result.name, exc)
    return None
