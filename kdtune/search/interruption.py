"""The search's one interruption policy, whichever stage it comes in (prepare, trials,
confirmation, tracking):

- **a signal** (SIGINT, Ctrl-C; SIGTERM, docker stop, systemd): the running stage saves its
  state (the trials and confirmation stages stop each Ray trial at its next checkpoint, see
  :mod:`kdtune.tune.driver`) and raises :class:`~kdtune.errors.SearchInterrupted`; the policy
  tells the tracking (trials still running and the parent end KILLED) and turns it into one
  line naming the command that resumes (exit 130 / 143). A signal during the final logging
  (the search itself finished and saved) says that ``kdtune sync NAME`` completes MLflow.
- **a lost Ray** (the signal reached a local Ray's own processes too): Tune's loop cannot
  return; :mod:`kdtune.tune` saves the stage's records, calls :meth:`InterruptionPolicy.stopped`
  from its watch and ends the process with the same line and exit code.
- **a lost tracking server**: the search never waits on MLflow; what could not be logged is
  one line (:func:`tracking_lost`, :func:`tracking_lagged`) naming ``kdtune sync NAME``.
- **a fault in a stage** (a full disk, a damaged cache refused, a teacher that diverges, a
  bug): the tracking told (trials still running and the parent FAILED: nothing is left
  RUNNING); a fault the user can fix is one line naming the stage and the command that
  resumes (:meth:`InterruptionPolicy.failed`, exit code 2); a bug keeps its traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kdtune.errors import KdtuneError, SearchInterrupted, disk_full, is_disk_full
from kdtune.results import SearchResult


@dataclass
class InterruptionPolicy:
    """``name``: the search; ``resume_command``: what its line says to run; ``record_stop``:
    the tracking told of the stop (the search's result, or None where the stage has none
    yet); it returns one line when MLflow lags, else None; ``record_failure``: the same for a
    fault."""

    name: str
    resume_command: str
    record_stop: Callable[[SearchResult | None], str | None]
    record_failure: Callable[[SearchResult | None], str | None] = lambda _result: None

    def stopped(self, exc: SearchInterrupted) -> SearchInterrupted:
        """A signal stopped the trials or the confirmation (or Ray was lost after one): the
        tracking told, the one line with the command that resumes."""
        lag = self.record_stop(exc.result if isinstance(exc.result, SearchResult) else None)
        note = f" (MLflow lags: {lag})" if lag else ""
        return SearchInterrupted(
            exc.signum,
            f"search {self.name!r} interrupted by {_name(exc.signum)}; its state is saved: "
            f"continue it with `{self.resume_command}`{note}",
            exc.result,
        )

    def failed(self, exc: BaseException, stage: str, result: SearchResult | None) -> BaseException:
        """A fault ended ``stage``: the tracking told (FAILED), then what the user sees: a
        :class:`KdtuneError` (a full disk among them) as one line naming the stage and the
        command that continues once it is fixed; anything else, a bug, as it is."""
        lag = self.record_failure(result)
        note = f" (MLflow lags: {lag})" if lag else ""
        if is_disk_full(exc):
            exc = disk_full(
                f"the {stage} stage's records",
                f"search {self.name!r}",
                "what it saved is kept",
                then="",
            )
        if not isinstance(exc, KdtuneError):
            return exc
        line = (
            f"{exc} [search {self.name!r} stopped in its {stage} stage; once this is fixed, "
            f"`{self.resume_command}` continues it]{note}"
        )
        try:
            return type(exc)(line)
        except TypeError:  # a subclass with arguments of its own
            return KdtuneError(line)

    def stopped_final_logging(
        self, exc: SearchInterrupted, result: SearchResult
    ) -> SearchInterrupted:
        """A signal during the final logging: the search is saved, MLflow is behind."""
        return SearchInterrupted(
            exc.signum,
            f"search {self.name!r} finished and is saved, but {_name(exc.signum)} stopped its "
            f"final logging to MLflow; `kdtune sync {self.name}` completes it",
            result,
        )


def tracking_lost(uri: str, name: str, exc: BaseException) -> str:
    """MLflow did not take the final logging: the line that says so and what to run."""
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return (
        f"tracking lagged: MLflow at {uri} did not take the search's final logging "
        f"({error}); `kdtune sync {name}` brings it up to date"
    )


def tracking_lagged(missed: int, error: str | None) -> str:
    """Trials not logged while the search ran (the final logging caught up)."""
    return (
        f"tracking lagged: {missed or 'some'} trial(s) were not logged while the search ran "
        f"({error or 'the tracking queue did not drain'}); the final logging caught up"
    )


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
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


def _name(signum: int) -> str:
    return signal.Signals(signum).name
