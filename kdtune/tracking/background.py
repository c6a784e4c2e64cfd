"""Tracking calls off Ray Tune's event loop: a queue and one worker thread, short timeouts.

While a search runs, each trial's logging is queued by the driver's Tune callback and done by
a worker thread, so a tracking server that is slow, down or restarting never holds up the
search (MLflow's own retries would block a call for minutes). What could not be logged is
counted, and MLflow is brought up to date by the search's final logging, by ``--resume`` or by
``kdtune sync NAME``, which log every trial not yet logged (a trial is never logged twice).
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kdtune.tracking.store import is_server_uri

if TYPE_CHECKING:
    from kdtune.diagnose import Diagnosis
    from kdtune.results import TrialRecord
    from kdtune.tracking.log import SearchTracker

# MLflow's HTTP settings while a search runs (where the user has not set them): a call to a
# server that does not answer fails in seconds instead of retrying for minutes.
SHORT_TIMEOUTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
RETRY_AFTER_S = 20.0  # after a failed call, later calls are not tried for this long


@contextlib.contextmanager
def short_timeouts(uri: str) -> Iterator[None]:
    """MLflow's HTTP calls to a tracking server time out in seconds while this runs."""
    if not is_server_uri(uri):
        yield
        return
    added = {k: v for k, v in SHORT_TIMEOUTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class BackgroundTracker:
    """A :class:`~kdtune.tracking.log.SearchTracker`'s trial logging on a worker thread.

    ``log_trial`` returns at once (it queues a copy of the record); :meth:`close` waits a
    bounded time for the queue to drain. After a failed call the tracker is left alone for
    :data:`RETRY_AFTER_S` (what comes meanwhile is counted as not logged), so a dead server
    costs one short timeout per interval, not one per trial.
    """

    def __init__(self, tracker: SearchTracker, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.tracker = tracker
        self.retry_after_s = retry_after_s
        self.missed: list[str] = []  # trials not logged live (logged by the final sync)
        self.logged = 0
        self.error = ""  # the last failure, one line
        self._down_until = 0.0
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="kdtune-tracking", daemon=True)
        self._thread.start()

    def log_trial(self, record: TrialRecord, diagnosis: Diagnosis | None = None) -> None:
        """Queue a trial's logging (of the record as it is now)."""
        record = copy.deepcopy(record)
        self._queue.put((record.trial_id, lambda: self.tracker.log_trial(record, diagnosis)))

    def close(self, wait_s: float) -> bool:
        """Stop after the queued calls, waiting at most ``wait_s``; True when all were done."""
        self._queue.put(None)
        self._thread.join(wait_s)
        return not self._thread.is_alive()

    @property
    def lagged(self) -> bool:
        return bool(self.missed)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            what, call = item
            if time.monotonic() < self._down_until:
                self.missed.append(what)
                continue
            try:
                call()
                self.logged += 1
            except Exception as exc:  # tracking must never take the search down
                self.missed.append(what)
                self.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                self._down_until = time.monotonic() + self.retry_after_s
