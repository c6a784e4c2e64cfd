"""Run a search: Ray Tune executes the trials, Optuna samples them and prunes the poor ones.

The only kdtune package that imports ray. Its modules, one concern each:

- :mod:`kdtune.tune.driver`: :func:`run_search` (Ray's set-up, a new or restored Tune
  experiment, the time limit), :func:`check_start` and :func:`check_resources`;
- :mod:`kdtune.tune.bridge`: the Optuna pruning bridge (:class:`PruningOptunaSearch`,
  :class:`OptunaPruningScheduler`) and the pitfalls of Ray's ``OptunaSearch`` it works around;
- :mod:`kdtune.tune.confirm`: the confirmation stage (:func:`confirm_plan`,
  :func:`run_confirm`): chosen configurations trained again with further seeds;
- :mod:`kdtune.tune.trial`: the trial as it runs in the Ray worker (:class:`TrainFit`);
- :mod:`kdtune.tune.records`: the driver's records (``search.json``) and live progress view;
- :mod:`kdtune.tune.protocol`: what they agree on (config layout, result keys, types), and
  :class:`~kdtune.tune.protocol.LiveRun`, the state of one run the driver owns and hands to
  the searcher, scheduler and callback (never pickled with them).

The search pipeline (:mod:`kdtune.search`) calls :func:`run_search` for its trials stage and
:func:`run_confirm` for its confirmation stage; nothing outside this package imports ray.

A Tune experiment pickles the searcher, the scheduler, the callback and the trial-name function
by module and name; the private names below keep experiments that searches started before this
package was split (as the single module ``kdtune.tune``) resumable.
"""

from kdtune.tune.bridge import OptunaPruningScheduler, PruningOptunaSearch
from kdtune.tune.bridge import _DefineByRun as _DefineByRun
from kdtune.tune.confirm import (
    base_seed,
    confirm_candidates,
    confirm_plan,
    confirm_points,
    run_confirm,
)
from kdtune.tune.driver import _trial_name as _trial_name
from kdtune.tune.driver import check_resources, check_start, run_search
from kdtune.tune.protocol import (
    CONFIG_KEY,
    NODE_KEY,
    REPEAT_ATTR,
    STOP_REASON_ATTR,
    OnTrialEnd,
    SpaceLike,
    TrialDivergedError,
    TrialFn,
)
from kdtune.tune.records import _MonitorCallback as _MonitorCallback
from kdtune.tune.trial import TrainFit, ray_trainable
from kdtune.tune.trial import _run_trial as _run_trial

__all__ = [
    "CONFIG_KEY",
    "NODE_KEY",
    "REPEAT_ATTR",
    "STOP_REASON_ATTR",
    "OnTrialEnd",
    "OptunaPruningScheduler",
    "PruningOptunaSearch",
    "SpaceLike",
    "TrainFit",
    "TrialDivergedError",
    "TrialFn",
    "base_seed",
    "check_resources",
    "check_start",
    "confirm_candidates",
    "confirm_plan",
    "confirm_points",
    "ray_trainable",
    "run_confirm",
    "run_search",
]
