"""``kdtune search`` as one pipeline of stages, each a small unit with a plain record in and
out, and one interruption policy that every stage follows:

    prepare (space, data, teacher, bank)  -> Prepared         (:mod:`kdtune.search.prepare`)
    trials (Ray Tune, Optuna)             -> SearchResult     (:mod:`kdtune.search.trials`)
    confirm (a plan of (config, seed))    -> SearchResult     (:mod:`kdtune.search.confirmation`)
    track (MLflow: live, then final)      -> Tracked          (:mod:`kdtune.search.track`)
    report (diagnoses, next points)       -> SearchOutcome    (:mod:`kdtune.search.outcome`)

:mod:`kdtune.search.pipeline` runs them in order; ``rejudge`` replays a finished search's race
from its stored runs under today's rule; :mod:`kdtune.search.interruption` says what
a signal, a lost Ray or a lost tracking server does, whichever stage it comes in. Ray stays in
:mod:`kdtune.tune`, MLflow in :mod:`kdtune.tracking`: this package orchestrates them.
"""

from kdtune.search.confirmation import rejudge
from kdtune.search.outcome import SearchOutcome
from kdtune.search.pipeline import run_pipeline
from kdtune.search.records import Prepared, SearchRequest, Tracked
from kdtune.search.track import sync

__all__ = [
    "Prepared",
    "SearchOutcome",
    "SearchRequest",
    "Tracked",
    "rejudge",
    "run_pipeline",
    "sync",
]
