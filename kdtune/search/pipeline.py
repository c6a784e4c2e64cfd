"""``kdtune search``, start to end: prepare → trials → confirm → track → report, each stage a
unit of its own module with a plain record in and out; an interruption in any of them handled
by the one policy of :mod:`kdtune.search.interruption`."""

from __future__ import annotations

from pathlib import Path

from kdtune.errors import SearchInterrupted
from kdtune.results import SEARCH_FILE, SearchResult
from kdtune.search.confirmation import confirm
from kdtune.search.interruption import InterruptionPolicy
from kdtune.search.outcome import SearchOutcome, report
from kdtune.search.prepare import prepare
from kdtune.search.records import SearchRequest
from kdtune.search.track import LiveTracking, timeouts
from kdtune.search.trials import run_trials


def run_pipeline(request: SearchRequest) -> SearchOutcome:
    """Validate and prepare, run the trials and the confirmation with their live logging, log
    the search's end to MLflow (guarded), report."""
    prepared = prepare(request)
    with timeouts(prepared.uri):
        tracking = LiveTracking(prepared)
        policy = InterruptionPolicy(
            prepared.space.name, request.resume_command, tracking.stopped, tracking.failed
        )
        stage, result = "trials", None
        try:
            result = run_trials(prepared, tracking, policy)
            stage = "confirmation"
            result = confirm(prepared, result, tracking, policy)
            result.save(prepared.folder / SEARCH_FILE)
        except SearchInterrupted as exc:
            raise policy.stopped(exc) from None
        except Exception as exc:  # a fault: the tracking told, one line where the user can act
            fault = policy.failed(exc, stage, _saved(prepared.folder / SEARCH_FILE, result))
            if fault is exc:
                raise
            raise fault from None
        tracked = tracking.finish(result, policy)
    return report(prepared, tracked)


def _saved(path: Path, result: SearchResult | None) -> SearchResult | None:
    """The search's records as they stand: the stage's result, else its ``search.json``."""
    if result is not None:
        return result
    try:
        return SearchResult.load(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None
