"""The trials stage: the search's trials under Ray Tune (:func:`kdtune.tune.run_search`),
Optuna sampling and pruning, each trial's end queued for the tracking as it comes."""

from __future__ import annotations

from kdtune.results import SearchResult
from kdtune.search.interruption import InterruptionPolicy
from kdtune.search.records import Prepared
from kdtune.search.track import LiveTracking


def run_trials(
    prepared: Prepared, tracking: LiveTracking, policy: InterruptionPolicy
) -> SearchResult:
    """Run (or resume) the trials; their records, with the teacher's AP beside them (a teacher
    no better than its students withholds the recommendation)."""
    from kdtune.tune import run_search

    request = prepared.request
    result = run_search(
        prepared.space,
        results=prepared.root,
        address=request.address,
        resume=request.resume,
        on_trial_end=tracking.trial_ended,
        progress=request.progress,
        search_id=prepared.search_id,
        on_abandon=policy.stopped,
    )
    result.teacher_val_ap = prepared.teacher_ap
    return result
