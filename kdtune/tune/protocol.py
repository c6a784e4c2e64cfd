"""What the search driver, the pruning bridge and the trial worker agree on.

The trial config's layout (:data:`CONFIG_KEY`), the key every reported result carries
(:data:`NODE_KEY`), the Optuna user attribute that says why a trial ended early
(:data:`STOP_REASON_ATTR`), the error that marks a diverged trial
(:class:`TrialDivergedError`), what a search space must offer (:class:`SpaceLike`) and the
callables a search takes, and :class:`LiveRun`, the state of one run of a Tune experiment that
its driver owns and hands to the objects Tune pickles. No ray here: plain names and types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kdtune.results import TrialRecord

if TYPE_CHECKING:
    import optuna

CONFIG_KEY = "kdtune"  # trial config: {"kdtune": {"train": {...}, "number": n, "params": {...}}}
NODE_KEY = "kdtune_node"  # added to every reported result: "<hostname>/<ray node id prefix>"
STOP_REASON_ATTR = "kdtune_stopped"  # Optuna user attribute: why a trial ended early
REPEAT_ATTR = "kdtune_repeat_of"  # Optuna user attribute: the trial whose run answered it

# A population trial (confirm.population > 1): {"kdtune": {"members": [run config, ...], ...}}
# trains its member runs as one population and reports each member's metrics under
# member_key(k, name); a member that leaves early (diverged) reports member_key(k, MEMBER_ERROR)
MEMBERS_KEY = "members"
MEMBER_ERROR = "kdtune_error"
# a search's population trial (budget.population > 1) also holds the path of the file in which
# the driver lists the members the pruner stopped (a JSON list of member indices): the trial
# reads it at each evaluation and drops those members (see kdtune.tune.trial)
PRUNED_FILE_KEY = "pruned_file"


def member_key(member: int, name: str) -> str:
    """The result key of member ``member``'s ``name`` in a population trial's results."""
    return f"m{member}|{name}"


def member_folder(member: int) -> str:
    """Member ``member``'s folder in a population trial's work folder and checkpoints."""
    return f"member{member}"


def member_trial_id(trial_id: str, member: int) -> str:
    """The record id of member ``member`` of the population trial ``trial_id``."""
    return f"{trial_id}_member{member}"


TrialFn = Callable[..., Any]  # fit(config, report, *, workdir, resume_from=None)
OnTrialEnd = Callable[[TrialRecord], None]


@dataclass
class LiveRun:
    """The state of one run of a Tune experiment, owned by its driver and handed to the objects
    Tune pickles into the experiment (searcher, scheduler, callback): never pickled with them
    (each drops it from its state), and handed again to the copies ``Tuner.restore`` unpickles.

    ``monitor`` receives Tune's events (the records, see :mod:`kdtune.tune.records`);
    ``interrupts`` is armed and settled in Tune's loop (the signal handling of
    :mod:`kdtune.tune.driver`); ``stopping``: a signal came, each trial pauses at its next
    checkpoint and none starts; ``deadline``: the ``time.monotonic()`` at which this run stops
    (the time limit); ``storage_url``: where the study is now; ``folder``: where the
    experiment is now (a moved results folder: the paths pickled in its snapshot are stale).
    """

    monitor: Any = None
    interrupts: Any = None
    stopping: bool = False
    deadline: float | None = None
    storage_url: str | None = None
    folder: str | None = None


class TrialDivergedError(RuntimeError):
    """Raised in the trial worker for a :class:`~kdtune.errors.TrialDiverged`: its name is what
    the driver reads in the trial's error text (the only channel back from a failed worker)."""


class SpaceLike(Protocol):
    """What :func:`~kdtune.tune.run_search` needs of a search space
    (:class:`kdtune.space.SearchSpace`)."""

    name: str
    metric: str
    mode: str
    budget: Any  # num_samples, max_epochs, eval_every, max_concurrent, time_limit_s
    resources: Any  # cpu, gpu
    source_text: str

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]: ...

    def trial_config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def warm_start_points(self) -> list[dict[str, Any]]: ...


def planned_epochs(config: dict[str, Any]) -> int:
    """The epochs the trial of Ray trial config ``config`` is to run."""
    train = config.get(CONFIG_KEY, {}).get("train", {})
    return int(train.get("epochs", 0) or 0)
