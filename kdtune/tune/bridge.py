"""The Optuna pruning bridge: Ray Tune's ``OptunaSearch`` with the file's pruner.

What it adds to Ray Tune's ``OptunaSearch``, and the pitfalls it works around:

- **pruning**: Ray's ``OptunaSearch`` fixes the study's pruner to ``NopPruner``. The
  :class:`OptunaPruningScheduler` reports each evaluation (step = epoch) to the Optuna trial,
  asks the file's pruner, tells the study ``PRUNED`` and stops the Ray trial;
  :class:`PruningOptunaSearch` then keeps Ray from telling that trial ``COMPLETE`` with a
  partial value. The private parts of ``OptunaSearch`` this needs are touched only by
  :class:`PruningOptunaSearch` (``tests/test_tune_bridge.py`` checks they still exist).
- **resume**: the study lives in SQLite next to the Tune experiment; ``Tuner.restore`` brings
  back this searcher (pickled whole), and the searcher reconciles its snapshot with the study
  (trials the killed process had already finished or created).
- **a checkpoint deleted after the last snapshot**: Tune deletes a trial's older checkpoints
  as new ones come (``num_to_keep``) but writes its experiment snapshot only every few seconds,
  so a killed search's snapshot can name a checkpoint that is gone. The scheduler points such
  a restored trial at the oldest checkpoint newer than it (:func:`recover_lost_checkpoint`),
  or lets it start over when none is left, instead of letting Tune fail it.
- **time limit**: enforced by the scheduler (the run's ``deadline``, set by the driver), not
  by Tune's ``time_budget_s``, which stops trials without telling the searcher or the
  callbacks.
- **the run's state**: searcher and scheduler read it from the driver's
  :class:`~kdtune.tune.protocol.LiveRun` (a signal's stop, the deadline, where the study and
  the experiment are now), handed to them by :meth:`kd_attach`; it is never pickled.

The searcher (with its :class:`_DefineByRun`) and the scheduler are pickled into the Tune
experiment's state, by module and class name (``kdtune.tune`` re-exports the names under which
searches started before this package was split pickled them).
"""

from __future__ import annotations

import copy
import logging
import pickle
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from kdtune.checks import is_finite
from kdtune.tune.protocol import (
    CONFIG_KEY,
    MEMBER_ERROR,
    MEMBERS_KEY,
    PRUNED_FILE_KEY,
    REPEAT_ATTR,
    STOP_REASON_ATTR,
    LiveRun,
    SpaceLike,
    member_key,
    member_trial_id,
    planned_epochs,
)

log = logging.getLogger(__name__)

_NO_RUN = LiveRun()  # what an object not (yet) handed a run's state reads: nothing set


def _live(obj: Any) -> LiveRun:
    live = obj.__dict__.get("_kd_live")
    return live if isinstance(live, LiveRun) else _NO_RUN


class PruningOptunaSearch(OptunaSearch):
    """Ray Tune's ``OptunaSearch`` with pruning, and the one class that touches its privates.

    Relies on these private parts of ``OptunaSearch`` (ray 2.60.0): ``_ot_trials`` (Ray trial
    id → ``optuna.Trial``), ``_ot_study`` (the ``optuna.Study``), ``_completed_trials`` (Ray
    trial ids already told), and ``save``/``restore`` pickling ``__dict__`` whole.

    Intermediate values are reported by :class:`OptunaPruningScheduler` through
    :meth:`report_epoch` (step = epoch, once per step), not by Ray's own ``on_trial_result``
    (which would report at Ray's iteration count). A trial ends in the study as COMPLETE
    (ran to its last epoch), PRUNED (by the pruner, or stopped early by the time limit) or FAIL
    (raised, never ran, or ended without a finite metric). Ends that are neither a pruner's
    decision nor an exception carry their reason in the :data:`STOP_REASON_ATTR` user attribute.

    A point the sampler proposes again (TPE does, on a stepped ratio) is the same run as the
    earlier trial of that point: every trial of a search trains on its seed. Where that trial
    completed, the new one is answered from it (its intermediate values and value, the
    :data:`REPEAT_ATTR` user attribute naming it; the monitor records it as the earlier run,
    :attr:`~kdtune.results.TrialRecord.repeat_of`) and the sampler asked again; with ``total``
    (the search's Optuna trials in all) an answered repeat counts against it, so the search
    trains fewer trials, not more. A repeat of a trial still running or pruned trains.
    """

    def __init__(
        self,
        space: Callable[[optuna.trial.BaseTrial], dict[str, Any]],
        *,
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner,
        storage: optuna.storages.BaseStorage,
        study_name: str,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        total: int | None = None,
    ) -> None:
        self._kd_total = total
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            sampler=sampler,
            storage=storage,
            study_name=study_name,
            points_to_evaluate=points_to_evaluate,
        )
        self._kd_pruner = pruner
        self._kd_steps: dict[str, set[int]] = {}  # steps already in the study, per Ray trial
        self._kd_final: dict[str, str] = {}  # Ray trial id -> final state name in the study
        self._kd_planned: dict[str, int] = {}  # Ray trial id -> the epochs it is to run
        self.study.pruner = pruner

    def kd_attach(self, live: LiveRun) -> None:
        """Hand this searcher the run's state; a searcher unpickled by name and URL opens its
        study now, where the run says it is."""
        self._kd_live = live
        self._kd_open_study()

    # -- what the scheduler and the driver use ---------------------------------------------
    @property
    def study(self) -> optuna.Study:
        return cast(optuna.Study, self._ot_study)

    def optuna_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial that Ray trial ``trial_id`` samples from, if any."""
        return self._ot_trials.get(trial_id)

    def final_state(self, trial_id: str) -> str | None:
        """``COMPLETE``/``PRUNED``/``FAIL`` once the study holds the trial's end, else None."""
        return self._kd_final.get(trial_id)

    def report_epoch(self, trial_id: str, epoch: int, value: float, *, may_prune: bool) -> bool:
        """Report ``value`` at step ``epoch``; True when the trial is (now) pruned: stop it."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        if trial_id in self._kd_final:
            return self._kd_final[trial_id] == "PRUNED"
        steps = self._kd_steps.setdefault(trial_id, set())
        if epoch in steps:  # a repeated result (the final duplicate, or replay after resume)
            return False
        try:
            ot_trial.report(value, epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._kd_final[trial_id] = self._stored_state(ot_trial.number)
            return self._kd_final[trial_id] == "PRUNED"
        steps.add(epoch)
        if not may_prune:
            return False
        ot_trial.study.pruner = self._kd_pruner
        if not ot_trial.should_prune():
            return False
        self._tell(trial_id, TrialState.PRUNED)
        return True

    def close(self) -> None:
        """Suggest no more trials in this run (the time limit is reached)."""
        self._kd_closed = True

    # -- Searcher hooks ----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if getattr(self, "_kd_closed", False):
            return Searcher.FINISHED
        if _live(self).stopping:  # not FINISHED: a resume suggests again
            return None
        self._adopt_orphan(trial_id)
        config = super().suggest(trial_id)
        while config is not None and self._answered_by_earlier(trial_id):
            if self._budget_spent():
                return Searcher.FINISHED
            config = super().suggest(trial_id)
        if config is not None:
            self._kd_planned[trial_id] = planned_epochs(config)
        return config

    def _answered_by_earlier(self, trial_id: str) -> bool:
        """Answer the trial just suggested to ``trial_id`` from a completed trial of the same
        point, if the study and the run's records hold one (then it is no longer this Ray
        trial's: the next suggestion is)."""
        ot_trial = self._ot_trials[trial_id]
        monitor = _live(self).monitor
        if getattr(self, "_kd_total", None) is None or self._kd_steps.get(trial_id):
            return False  # without a budget to count against, asking again could never end
        if monitor is None or not hasattr(monitor, "repeat"):
            return False
        params = ot_trial.params
        earlier = next(
            (
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number != ot_trial.number and t.params == params and t.value is not None
            ),
            None,
        )
        if earlier is None or not monitor.repeat(ot_trial.number, earlier.number):
            return False
        for step, value in sorted(earlier.intermediate_values.items()):
            ot_trial.report(value, step)
        ot_trial.set_user_attr(REPEAT_ATTR, earlier.number)
        self.study.tell(ot_trial, earlier.value, state=TrialState.COMPLETE)
        del self._ot_trials[trial_id]
        log.info(
            "optuna trial %s is trial %s again: answered from it", ot_trial.number, earlier.number
        )
        return True

    def _budget_spent(self) -> bool:
        """Whether the study holds ``total`` trials (waiting ones not counted) and no orphan
        waits for a Ray trial."""
        total = getattr(self, "_kd_total", None)
        if total is None or getattr(self, "_kd_orphans", []):
            return False
        started = [
            t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING
        ]
        return len(started) >= total

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Nothing: :class:`OptunaPruningScheduler` reports each epoch once, at its epoch."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        if trial_id not in self._ot_trials or trial_id in self._kd_final:
            return
        result = result or {}
        value = result.get(self.metric)
        # Ray marks every stopped trial "done"; complete means: reached its last epoch
        epoch = result.get("epoch")
        done = isinstance(epoch, int | float) and epoch >= self._kd_planned.get(trial_id, 0)
        if error:
            self._tell(trial_id, TrialState.FAIL)
        elif done and value is not None and is_finite(value):
            self._tell(trial_id, TrialState.COMPLETE, float(value))
        elif done:
            self._tell(trial_id, TrialState.FAIL, reason=f"ended without a finite {self.metric}")
        elif self._kd_steps.get(trial_id):
            self._tell(trial_id, TrialState.PRUNED, reason="stopped by the search's time limit")
        else:
            self._tell(trial_id, TrialState.FAIL, reason="never ran")

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def restore(self, checkpoint_path: str) -> None:
        """Load the snapshot, then catch up with the study, which may be ahead of it."""
        self.__dict__.pop("_kd_trial_ids", None)  # the snapshot's trials replace any unopened
        super().restore(checkpoint_path)
        self._kd_open_study()
        self._kd_closed = False  # a resumed search may suggest again
        self._reconcile()

    # -- pickling: the study by name and URL, never its SQLite connection ---------------------
    def __getstate__(self) -> dict[str, Any]:
        """The searcher's state with its study as (name, storage URL) and its Optuna trials
        as storage ids: Ray pickles it (the snapshot, the Tuner), and an unpickled SQLite
        storage would open the file at its old absolute path. Never the run's state."""
        state = self.__dict__.copy()
        state.pop("_kd_live", None)
        if "_kd_study_ref" in state:  # unpickled, its study not opened yet: as it came
            state["_ot_trials"] = state.pop("_kd_trial_ids", {})
            state["_ot_study"] = None
            return state
        url = _storage_url(self.study)
        if url is None:  # in-memory storage: pickled whole
            return state
        state["_ot_study"] = state["_storage"] = None
        state["_kd_study_ref"] = (self.study.study_name, url)
        state["_ot_trials"] = {k: t._trial_id for k, t in self._ot_trials.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """As pickled; its study opens once the run's state is handed over (:meth:`kd_attach`)
        or a snapshot restored: the URL it was pickled with may be stale (a moved folder)."""
        self.__dict__.update(state)
        if "_kd_study_ref" in state:  # the study and its trials: at first use (__getattr__)
            self.__dict__.pop("_ot_study", None)
            self.__dict__["_kd_trial_ids"] = self.__dict__.pop("_ot_trials", {})

    def __getattr__(self, name: str) -> Any:
        """The study and its trials of a searcher unpickled but not handed a run's state:
        opened at first use, where it was pickled."""
        if name in ("_ot_study", "_ot_trials") and "_kd_study_ref" in self.__dict__:
            self._kd_open_study()
            return self.__dict__[name]
        raise AttributeError(name)

    def _kd_open_study(self) -> None:
        """Open the study of a state pickled by name and URL: at the URL of the run now
        (its :class:`~kdtune.tune.protocol.LiveRun`), else at the one it was pickled with."""
        ref = self.__dict__.pop("_kd_study_ref", None)
        if ref is None:
            return
        name, url = ref
        ids = self.__dict__.pop("_kd_trial_ids", None)
        if ids is None:  # a snapshot restored over this searcher
            ids = self.__dict__.get("_ot_trials") or {}
        storage = optuna.storages.RDBStorage(_live(self).storage_url or url)
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=self._sampler, pruner=self._kd_pruner
        )
        self._ot_study, self._storage = study, storage  # type: ignore[assignment]
        self._ot_trials = {k: optuna.Trial(study, i) for k, i in ids.items()}

    # -- internals ---------------------------------------------------------------------------
    def _tell(
        self, trial_id: str, state: TrialState, value: float | None = None, reason: str = ""
    ) -> None:
        ot_trial = self._ot_trials[trial_id]
        try:
            if reason:
                ot_trial.set_user_attr(STOP_REASON_ATTR, reason)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna warns when a NaN value becomes FAIL
                self.study.tell(ot_trial, value, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as exc:
            log.debug("optuna trial %s already finished: %s", ot_trial.number, exc)
        self._kd_final[trial_id] = self._stored_state(ot_trial.number)

    def _stored_state(self, number: int) -> str:
        for frozen in self.study.get_trials(deepcopy=False):
            if frozen.number == number:
                return frozen.state.name
        return "FAIL"

    def _reconcile(self) -> None:
        """After a kill, the study may hold ends and trials that the snapshot does not know.

        Finished trials are noted (the scheduler stops a restored trial that already ended
        before it runs again; a restarted trial is never told twice). Trials created after
        the snapshot, which no restored Ray trial runs (*orphans*), are handed to the next
        Ray trials that ask (:meth:`_adopt_orphan`) rather than told FAIL: a FAIL counts as
        visited for the grid sampler, which would then never run that point (and, were it the
        last one, calls ``study.stop()``, which raises outside ``optimize``).
        """
        self.study.pruner = self._kd_pruner
        stored = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        known = set()
        for trial_id, ot_trial in self._ot_trials.items():
            known.add(ot_trial.number)
            frozen = stored.get(ot_trial.number)
            if frozen is None:
                continue
            self._kd_steps[trial_id] = set(frozen.intermediate_values)
            if frozen.state.is_finished():
                self._kd_final[trial_id] = frozen.state.name
        self._kd_orphans = [
            number
            for number, frozen in sorted(stored.items())
            if frozen.state == TrialState.RUNNING and number not in known
        ]

    def orphans(self) -> list[int]:
        """The numbers of the study's trials that wait for a Ray trial to run them."""
        return list(getattr(self, "_kd_orphans", []))

    def _adopt_orphan(self, trial_id: str) -> None:
        """Give Ray trial ``trial_id`` the study's oldest orphan (its parameters, grid point
        and number), if any: it runs from its first epoch, its steps already in the study
        are not reported twice."""
        orphans: list[int] = getattr(self, "_kd_orphans", [])
        if trial_id in self._ot_trials or not orphans:
            return
        number = orphans.pop(0)
        storage = self.study._storage
        study_id = storage.get_study_id_from_name(self.study.study_name)
        frozen = storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(study_id, number)
        )
        if frozen.state != TrialState.RUNNING:
            return self._adopt_orphan(trial_id)
        self._ot_trials[trial_id] = optuna.Trial(self.study, frozen._trial_id)
        self._kd_steps[trial_id] = set(frozen.intermediate_values)


class PopulationOptunaSearch(PruningOptunaSearch):
    """:class:`PruningOptunaSearch` whose Ray trials are populations of up to ``population``
    Optuna trials (``budget.population`` > 1; the default of 1 is the plain searcher).

    Each Ray trial asks the study for its members one by one (``study.ask``, each sampled by
    the study's sampler; orphans of a killed run first), and its config holds their points
    under :data:`~kdtune.tune.protocol.MEMBERS_KEY`, each shaped as a plain trial's (its own
    Optuna trial number). ``total`` Optuna trials in all (``budget.num_samples``): the last Ray
    trial may hold fewer members. A member is kept in the parent's maps under the id
    :func:`~kdtune.tune.protocol.member_trial_id` (its steps, its end, its pickled trial id), so
    that reporting, pruning, telling, pickling and the reconciliation on restore are the
    parent's, member by member. The scheduler reports each member's value to its own trial
    (:meth:`report_member`) and writes the members pruned so far to the trial's
    :data:`~kdtune.tune.protocol.PRUNED_FILE_KEY` file, which the trial reads at each evaluation
    (:mod:`kdtune.tune.trial`). When the Ray trial ends, each member not yet ended is told its
    own end (COMPLETE with its last value, PRUNED by the time limit, FAIL)."""

    def __init__(self, *args: Any, population: int, total: int, **kwargs: Any) -> None:
        super().__init__(*args, total=int(total), **kwargs)
        self._kd_population = int(population)
        self._kd_members: dict[str, int] = {}  # Ray trial id -> its number of members
        self._kd_last: dict[str, tuple[int, float | None]] = {}  # member id -> (epoch, value)

    def members(self, trial_id: str) -> list[str]:
        """The member ids of Ray trial ``trial_id`` (none for a trial this searcher did not
        suggest)."""
        return [member_trial_id(trial_id, k) for k in range(self._kd_members.get(trial_id, 0))]

    def final_state(self, trial_id: str) -> str | None:
        """A population trial's ``COMPLETE`` once every member has ended in the study."""
        ids = self.members(trial_id)
        if not ids:
            return super().final_state(trial_id)
        return "COMPLETE" if all(m in self._kd_final for m in ids) else None

    def report_member(
        self, trial_id: str, k: int, epoch: int, value: float | None, *, may_prune: bool
    ) -> bool:
        """Member ``k``'s ``value`` at step ``epoch`` (None: reported, but no finite value);
        True when that member is (now) pruned."""
        member = member_trial_id(trial_id, k)
        if member in self._kd_final:
            return self._kd_final[member] == "PRUNED"
        self._kd_last[member] = (epoch, value)
        if value is None:
            return False
        return self.report_epoch(member, epoch, value, may_prune=may_prune)

    def member_failed(self, trial_id: str, k: int, reason: str) -> None:
        """Member ``k`` left its population with an error (diverged): FAIL in the study."""
        member = member_trial_id(trial_id, k)
        if member in self._ot_trials and member not in self._kd_final:
            self._tell(member, TrialState.FAIL, reason=reason)

    def pruned(self, trial_id: str) -> list[int]:
        """The indices of Ray trial ``trial_id``'s members the study holds PRUNED."""
        return [
            k for k, m in enumerate(self.members(trial_id)) if self._kd_final.get(m) == "PRUNED"
        ]

    def live(self, trial_id: str) -> int:
        """How many of Ray trial ``trial_id``'s members have not ended in the study."""
        return sum(m not in self._kd_final for m in self.members(trial_id))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if getattr(self, "_kd_closed", False):
            return Searcher.FINISHED
        if _live(self).stopping:
            return None
        if trial_id in self._kd_members:  # asked again for a trial it already suggested
            return self._population_config(trial_id)
        asked = sum(self._kd_members.values())
        size = min(self._kd_population, int(self._kd_total or 0) - asked)
        if size <= 0:
            return Searcher.FINISHED
        for k in range(size):
            member = member_trial_id(trial_id, k)
            self._adopt_orphan(member)
            if member not in self._ot_trials:
                self._ot_trials[member] = self.study.ask()
        self._kd_members[trial_id] = size
        config = self._population_config(trial_id)
        self._kd_planned[trial_id] = planned_epochs(
            {CONFIG_KEY: config[CONFIG_KEY][MEMBERS_KEY][0]}
        )
        return config

    def _population_config(self, trial_id: str) -> dict[str, Any]:
        space = cast(Callable[[optuna.Trial], dict[str, Any]], self._space)
        points = [space(self._ot_trials[m])[CONFIG_KEY] for m in self.members(trial_id)]
        folder = Path(_live(self).folder or ".") / PRUNED_FOLDER
        return {
            CONFIG_KEY: {
                MEMBERS_KEY: points,
                "number": None,
                "params": {},
                PRUNED_FILE_KEY: str(folder / f"{trial_id}.json"),
            }
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        ids = self.members(trial_id)
        if not ids:
            return super().on_trial_complete(trial_id, result, error)
        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        planned = self._kd_planned.get(trial_id, 0)
        for member in ids:
            if member in self._kd_final or member not in self._ot_trials:
                continue
            epoch, value = self._kd_last.get(member, (0, None))
            if error:
                self._tell(member, TrialState.FAIL)
            elif epoch >= planned and value is not None:
                self._tell(member, TrialState.COMPLETE, value)
            elif epoch >= planned and epoch > 0:
                self._tell(member, TrialState.FAIL, reason=f"ended without a finite {self.metric}")
            elif self._kd_steps.get(member):
                self._tell(member, TrialState.PRUNED, reason="stopped by the search's time limit")
            else:
                self._tell(member, TrialState.FAIL, reason="never ran")

    def _reconcile(self) -> None:
        """The parent's, member by member; then each member's last step as the study holds it
        (a restored population trial trains again from its start, its steps not reported
        twice)."""
        super()._reconcile()
        stored = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for member, ot_trial in self._ot_trials.items():
            frozen = stored.get(ot_trial.number)
            if frozen is not None and frozen.intermediate_values:
                step = max(frozen.intermediate_values)
                self._kd_last[member] = (step, frozen.intermediate_values[step])


PRUNED_FOLDER = "pruned"  # under the search's folder: each population trial's pruned members


def write_pruned(path: str, members: list[int]) -> None:
    """The members of a population trial that the pruner stopped, as its trial reads them
    (written whole, then renamed: the trial never reads half a list)."""
    import json
    import os

    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    part = file.with_name(file.name + ".part")
    part.write_text(json.dumps(sorted(members)))
    os.replace(part, file)


def _storage_url(study: optuna.Study) -> str | None:
    """The URL of a study's RDB storage (Optuna wraps it in a cache); None for others."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    url = getattr(backend, "url", None)
    return url if isinstance(url, str) else None


class OptunaPruningScheduler(FIFOScheduler):
    """Lets the Optuna pruner decide at each reported evaluation whether a trial goes on.

    Results are not buffered, so a trial is stopped at the evaluation that pruned it. A
    trial's last epoch is reported but never pruned: it has nothing left to save.

    It also enforces the search's time limit (the run's ``deadline``, set by
    :func:`~kdtune.tune.run_search`): past it, running trials stop at their next
    evaluation (PRUNED, reason in the study), waiting ones are dropped and no new trial is
    suggested. Unlike Tune's own ``time_budget_s``, which stops trials without telling the
    searcher or the callbacks.
    """

    _supports_buffered_results = False

    def __init__(
        self, searcher: PruningOptunaSearch, metric: str, live: LiveRun | None = None
    ) -> None:
        super().__init__()
        self._searcher = searcher
        self._metric = metric
        self._kd_live = live

    def kd_attach(self, live: LiveRun) -> None:
        """Hand this scheduler (and its searcher) the run's state."""
        self._kd_live = live
        self._searcher.kd_attach(live)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_kd_live", None)  # the run's, never pickled
        return state

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        kd = trial.config.get(CONFIG_KEY, {})
        if MEMBERS_KEY in kd and isinstance(self._searcher, PopulationOptunaSearch):
            return self._population_result(trial, result, kd)
        epoch, value = result.get("epoch"), result.get(self._metric or "")
        if epoch is None or value is None or not is_finite(value):
            return TrialScheduler.CONTINUE
        planned = planned_epochs(trial.config)
        stop = self._searcher.report_epoch(
            trial.trial_id, int(epoch), float(value), may_prune=int(epoch) < planned
        )
        if stop or (int(epoch) < planned and self._out_of_time()):
            return TrialScheduler.STOP
        if int(epoch) < planned and _live(self).stopping:
            return TrialScheduler.PAUSE  # at this checkpoint; a resume goes on from it
        return TrialScheduler.CONTINUE

    def _population_result(self, trial: Any, result: dict[str, Any], kd: dict[str, Any]) -> str:
        """A population trial's evaluation: each member's value to its own Optuna trial, the
        pruner asked per member; the members pruned so far written to the trial's file; the
        trial stopped once no member is left."""
        searcher = cast(PopulationOptunaSearch, self._searcher)
        members = kd[MEMBERS_KEY]
        for k in range(len(members)):
            error = result.get(member_key(k, MEMBER_ERROR))
            if isinstance(error, str):
                searcher.member_failed(trial.trial_id, k, error)
        epoch = result.get("epoch")
        planned = planned_epochs({CONFIG_KEY: members[0]})
        if isinstance(epoch, int | float):
            before = searcher.pruned(trial.trial_id)
            for k in range(len(members)):
                if not any(n.startswith(member_key(k, "")) for n in result):
                    continue  # not in this evaluation (left the population)
                value = result.get(member_key(k, self._metric or ""))
                searcher.report_member(
                    trial.trial_id,
                    k,
                    int(epoch),
                    float(value) if value is not None and is_finite(value) else None,
                    may_prune=int(epoch) < planned,
                )
            now = searcher.pruned(trial.trial_id)
            if now != before and kd.get(PRUNED_FILE_KEY):
                write_pruned(str(kd[PRUNED_FILE_KEY]), now)
        if not isinstance(epoch, int | float) or int(epoch) >= planned:
            return TrialScheduler.CONTINUE  # its last evaluation: the trial ends on its own
        if searcher.live(trial.trial_id) == 0:
            return TrialScheduler.STOP  # every member pruned (or failed)
        if self._out_of_time():
            return TrialScheduler.STOP
        if _live(self).stopping:
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        folder = _live(self).folder
        storage = getattr(trial, "storage", None)
        if folder and storage is not None and storage.storage_fs_path != folder:
            moved = copy.copy(storage)
            moved.storage_fs_path = folder
            trial.set_storage(moved)  # as Tune does for the trials it restores
        recover_lost_checkpoint(trial)
        super().on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        for trial in list(tune_controller.get_trials()):
            # restored from a snapshot older than the study, it ended already: never rerun it
            if trial.status in ("PENDING", "PAUSED") and self._searcher.final_state(trial.trial_id):
                tune_controller.stop_trial(trial)
        if _live(self).stopping:
            return None
        if not self._out_of_time():
            return super().choose_trial_to_run(tune_controller)
        for trial in list(tune_controller.get_trials()):
            if trial.status == "PENDING":
                tune_controller.stop_trial(trial)
        return None

    def _out_of_time(self) -> bool:
        deadline = _live(self).deadline
        if deadline is None or time.monotonic() < deadline:
            return False
        self._searcher.close()
        return True


def recover_lost_checkpoint(trial: Any) -> str | None:
    """Point a restored trial whose latest checkpoint no longer exists at the oldest of its
    checkpoints newer than that one, or at none (the trial starts over) when none is left.
    That one is whole: Tune deletes a checkpoint only when a newer one is registered, and
    registers each only after it is written.

    Returns the checkpoint folder's name the trial now resumes from ("" to start over), or
    None when nothing was lost. Touches Tune's private ``_CheckpointManager`` (ray 2.60.0).
    """
    from pyarrow.fs import FileSelector, FileType
    from ray.tune import Checkpoint

    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is None or latest.checkpoint is None:
        return None
    lost = latest.checkpoint
    fs = lost.filesystem
    if _exists(fs, lost.path):
        return None
    parent, _, name = lost.path.rstrip("/").rpartition("/")
    entries = fs.get_file_info(FileSelector(parent, allow_not_found=True))
    newer = sorted(
        info.path
        for info in entries
        if info.type == FileType.Directory
        and info.base_name.startswith("checkpoint_")
        and info.base_name > name
    )
    kept = manager._checkpoint_results
    manager._checkpoint_results = [  # Tune would try to delete the lost ones again
        r for r in kept if r.checkpoint is not None and _exists(fs, r.checkpoint.path)
    ]
    if not newer:
        log.warning("trial %s: checkpoint %s is gone; it starts over", trial.trial_id, name)
        manager._latest_checkpoint_result = None
        return ""
    found = newer[0].rpartition("/")[2]
    latest.checkpoint = Checkpoint(path=newer[0], filesystem=fs)
    latest.metrics = _checkpoint_metrics(trial, found) or latest.metrics
    log.warning("trial %s: checkpoint %s is gone; resumes from %s", trial.trial_id, name, found)
    return found


def _exists(fs: Any, path: str) -> bool:
    from pyarrow.fs import FileType

    return bool(fs.get_file_info(path).type != FileType.NotFound)


def _checkpoint_metrics(trial: Any, name: str) -> dict[str, Any]:
    """The result Tune logged with checkpoint ``name`` (its ``result.json`` line), if any."""
    import json
    from pathlib import Path

    file = Path(trial.storage.trial_fs_path) / "result.json"
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if result.get("checkpoint_dir_name") == name:
            return cast(dict[str, Any], result)
    return {}


class _DefineByRun:
    """The define-by-run space for ``OptunaSearch``: sample, then build the full config."""

    def __init__(self, space: SpaceLike) -> None:
        self.space = space

    def __call__(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        overrides = self.space.suggest(trial)
        train = self.space.trial_config(overrides)
        for key, value in trial_attributes(train).items():
            trial.set_user_attr(key, value)  # what optuna-dashboard shows beside the params
        return {CONFIG_KEY: {"train": train, "number": trial.number, "params": dict(trial.params)}}


def trial_attributes(train: dict[str, Any]) -> dict[str, Any]:
    """A trial's configuration as Optuna user attributes: level, seed, learning rate, and its
    β schedule(s) as the spec (the machine key), in words (``weighting``: α and β spelled out)
    and the shape's parameters (``alpha`` for a fixed ratio)."""
    from kdtune.schedules import parse_schedule

    attrs: dict[str, Any] = {"stage": "search"}  # confirmation runs: "confirm"
    attrs.update({k: train[k] for k in ("level", "seed", "lr", "batch_size")})
    slots = [("schedule", "")]
    if train.get("level") == "chain":
        slots.append(("schedule_second", "_second"))
    for key, suffix in slots:
        attrs[key] = train[key]
        attrs["weighting" + suffix] = parse_schedule(train[key]).words
        for name, value in parse_schedule(train[key]).params().items():
            attrs[name + suffix] = value
    return attrs
