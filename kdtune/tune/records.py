"""The driver's records of a search: ``search.json`` and the live progress view.

Tune's events reach the search's :class:`_Monitor` through :class:`_MonitorCallback`, which
finds it in the run's :class:`~kdtune.tune.protocol.LiveRun` (handed again to the copy of the
callback that ``Tuner.restore`` unpickles, see :meth:`_MonitorCallback.kd_attach`).
``search.json`` (a :class:`~kdtune.results.SearchResult`) is rewritten as trials report and
end, so a killed search still leaves a useful file; at the end each trial takes the state the
Optuna study holds, with the reason it stopped early
(:data:`~kdtune.tune.protocol.STOP_REASON_ATTR`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from ray import tune

from kdtune.checks import is_number
from kdtune.console import Progress, estimate_eta, progress_table
from kdtune.results import (
    COMPLETE,
    FAILED,
    PRUNED,
    RUNNING,
    SEARCH_FILE,
    SEARCH_STAGE,
    SearchResult,
    TrialRecord,
)
from kdtune.tune.protocol import (
    CONFIG_KEY,
    MEMBER_ERROR,
    MEMBERS_KEY,
    NODE_KEY,
    STOP_REASON_ATTR,
    LiveRun,
    OnTrialEnd,
    SpaceLike,
    TrialDivergedError,
    member_folder,
    member_key,
    member_trial_id,
)

_STATE_OF = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED, "RUNNING": RUNNING}


class _MonitorCallback(tune.Callback):
    """Forwards Tune's events to the run's :class:`_Monitor` and signal handling (its
    :class:`~kdtune.tune.protocol.LiveRun`, never pickled: ``Tuner.restore`` unpickles a copy
    of this callback, which the driver hands the run's state again)."""

    def __init__(self, key: str, live: LiveRun | None = None) -> None:
        self.key = key  # kept: experiments pickled before the run's state was handed over
        self._kd_live = live

    def kd_attach(self, live: LiveRun) -> None:
        self._kd_live = live

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_kd_live", None)
        return state

    def _part(self, name: str) -> Any:
        live = self.__dict__.get("_kd_live")
        return getattr(live, name, None)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if (m := self._part("monitor")) is not None:
            m.trial_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (m := self._part("monitor")) is not None:
            m.trial_end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (m := self._part("monitor")) is not None:
            m.trial_end(trial, errored=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if (s := self._part("interrupts")) is not None:
            s.arm()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if (m := self._part("monitor")) is not None:
            m.refresh()
        if (s := self._part("interrupts")) is not None:
            s.settle(trials)


class _Monitor:
    """Keeps the trial records, writes ``search.json``, calls ``on_trial_end``, shows progress."""

    def __init__(
        self,
        result: SearchResult,
        *,
        path: Path,
        storage_url: str,
        budget: Any,
        on_trial_end: OnTrialEnd | None,
        progress: bool,
    ) -> None:
        self.result, self.path, self.budget = result, path, budget
        self.storage_url = storage_url
        self.records = {t.trial_id: t for t in result.trials}
        self.on_trial_end = on_trial_end
        self.prior_wall_s = result.wall_s
        self.started = time.monotonic()
        self.epochs_now = 0  # epochs reported in this session
        self.show = progress
        self._live: Any = None
        self._last_draw = 0.0
        self._storage: optuna.storages.BaseStorage | None = None

    # -- events ------------------------------------------------------------------------------
    def trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        record = self._record(trial)
        entry = _history_entry(result)
        epoch = entry.get("epoch")
        if epoch is not None and all(h.get("epoch") != epoch for h in record.history):
            self.epochs_now += max(0, int(epoch) - record.epochs_run)
        record.history = sorted(
            [h for h in record.history if h.get("epoch") != epoch] + [entry],
            key=lambda h: h.get("epoch", 0.0),
        )
        record.state = RUNNING
        record.node = result.get(NODE_KEY) or record.node
        record.wall_s = float(result.get("time_total_s") or record.wall_s)
        self.save()
        self.refresh(force=True)

    def trial_end(self, trial: Any, *, errored: bool) -> None:
        known = trial.trial_id in self.records
        record = self._record(trial)
        if not errored and not record.history and not known:
            self.records.pop(trial.trial_id)  # never ran (removed by the time limit)
            return
        if errored:
            record.state = FAILED
            record.error, record.diverged = _error_of(trial)
        else:
            state, reason = self._study_state(record.number)
            record.state, record.error = state or COMPLETE, reason
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            record.checkpoint_dir = checkpoint.path
        self.save()
        self.refresh(force=True)
        if self.on_trial_end is not None:
            self.on_trial_end(record)

    def repeat(self, number: int, of: int) -> bool:
        """Record Optuna trial ``number`` as answered by the finished trial ``of`` (the same
        configuration: its history, checkpoint and end, no run of its own); False where no
        complete record of ``of`` is held (then the trial trains)."""
        earlier = next(
            (r for r in self.records.values() if r.number == of and r.state == COMPLETE), None
        )
        if earlier is None:
            return False
        record = replace(
            earlier,
            trial_id=f"repeat_{number:04d}",
            number=number,
            history=[dict(h) for h in earlier.history],
            wall_s=0.0,
            node=None,
            repeat_of=of,
        )
        self.records[record.trial_id] = record
        self.save()
        self.refresh(force=True)
        if self.on_trial_end is not None:
            self.on_trial_end(record)
        return True

    # -- records -----------------------------------------------------------------------------
    def _record(self, trial: Any) -> TrialRecord:
        record = self.records.get(trial.trial_id)
        if record is None:
            kd = trial.config.get(CONFIG_KEY, {})
            record = TrialRecord(
                trial_id=trial.trial_id,
                state=RUNNING,
                config=dict(kd.get("train", {})),
                params=dict(kd.get("params", {})),
                number=kd.get("number"),
                stage=kd.get("stage", SEARCH_STAGE),
                round=kd.get("round"),
            )
            self.records[trial.trial_id] = record
        return record

    def _study_state(self, number: int | None) -> tuple[str | None, str | None]:
        """The trial's state in the Optuna study (a kdtune state) and why it stopped early."""
        if number is None:
            return None, None
        if self._storage is None:
            self._storage = optuna.storages.RDBStorage(self.storage_url)
        try:
            study_id = self._storage.get_study_id_from_name(self.result.study_name or "")
            trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, number)
            frozen = self._storage.get_trial(trial_id)
        except KeyError:
            return None, None
        return _STATE_OF.get(frozen.state.name), frozen.user_attrs.get(STOP_REASON_ATTR)

    def snapshot(self) -> SearchResult:
        self.result.trials = sorted(
            self.records.values(), key=lambda t: (t.number is None, t.number or 0, t.trial_id)
        )
        self.result.wall_s = self.prior_wall_s + (time.monotonic() - self.started)
        return self.result

    def save(self) -> None:
        self.snapshot().save(self.path)

    def finish(self) -> SearchResult:
        """Final records: each trial's state as the study holds it, then ``search.json``."""
        for record in self.records.values():
            stored, reason = self._study_state(record.number)
            if record.state == FAILED or stored is None:
                continue
            if stored == FAILED and record.state == RUNNING:
                reason = reason or "interrupted, and not resumed"
            record.state, record.error = stored, record.error or reason
        self.save()
        return self.result

    # -- live view ---------------------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        if not self.show:
            return
        from rich.console import Console
        from rich.live import Live

        self._live = Live(self._table(), console=Console(stderr=True), auto_refresh=False)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live.console.line()  # what follows starts on a line of its own
            self._live = None

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._live is None or (not force and now - self._last_draw < 0.5):
            return
        self._last_draw = now
        self._live.update(self._table(), refresh=True)

    def _table(self) -> Any:
        result = self.snapshot()
        best = result.best
        counts = result.counts()
        n, max_epochs = int(self.budget.num_samples), int(self.budget.max_epochs)
        running = [t for t in result.trials if t.state == RUNNING]
        left = sum(max_epochs - t.epochs_run for t in running)
        left += max(0, n - len(result.trials)) * max_epochs
        elapsed = time.monotonic() - self.started
        return progress_table(
            Progress(
                name=result.name,
                metric=result.metric,
                counts=counts,
                num_samples=n,
                best_value=best.value(result.metric) if best else None,
                best_trial=best.trial_id if best else None,
                elapsed_s=result.wall_s,
                eta_s=estimate_eta(elapsed, self.epochs_now, left),
                epochs_done=result.epochs_spent(),
                epochs_budget=n * max_epochs,
            )
        )


class _PopulationMonitor(_Monitor):
    """A :class:`_Monitor` whose trials may be populations (:mod:`kdtune.tune.trial`): each
    member of one becomes a record of its own, as if it had been a trial (its id
    :func:`~kdtune.tune.protocol.member_trial_id`, its run config, its metrics, its state, its
    checkpoint the member's folder in the trial's); a trial of one run is recorded as by
    :class:`_Monitor`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.member_errors: dict[str, str] = {}  # member record id → why it left

    def trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        members = _members(trial)
        if members is None:
            return super().trial_result(trial, result)
        shared = {k: result[k] for k in ("epoch", NODE_KEY, "time_total_s") if k in result}
        for k in range(len(members)):
            view = _MemberView(trial, k)
            error = result.get(member_key(k, MEMBER_ERROR))
            if isinstance(error, str):
                self.member_errors[view.trial_id] = error
                continue
            prefix = member_key(k, "")
            mine = {n[len(prefix) :]: v for n, v in result.items() if n.startswith(prefix)}
            if mine:
                super().trial_result(view, {**shared, **mine})

    def trial_end(self, trial: Any, *, errored: bool) -> None:
        members = _members(trial)
        if members is None:
            return super().trial_end(trial, errored=errored)
        for k in range(len(members)):
            view = _MemberView(trial, k)
            error = self.member_errors.get(view.trial_id)
            if error is not None and not errored:
                view.error_text = error
            record = self.records.get(view.trial_id)
            if record is None or not record.history:
                view.checkpoint = None  # no evaluation, no checkpoint of its own
            super().trial_end(view, errored=errored or error is not None)


def _members(trial: Any) -> list[dict[str, Any]] | None:
    """A population trial's member run configs; None for a trial of one run."""
    members = trial.config.get(CONFIG_KEY, {}).get(MEMBERS_KEY)
    return list(members) if members is not None else None


class _MemberView:
    """Member ``k`` of a population trial, seen as a trial by :class:`_Monitor`."""

    def __init__(self, trial: Any, k: int) -> None:
        self.trial, self.k = trial, k
        self.trial_id = member_trial_id(trial.trial_id, k)
        self.config = {CONFIG_KEY: trial.config[CONFIG_KEY][MEMBERS_KEY][k]}
        self.error_text: str | None = None
        checkpoint = trial.checkpoint
        self.checkpoint: Any = (
            None
            if checkpoint is None
            else SimpleNamespace(path=str(Path(checkpoint.path) / member_folder(k)))
        )

    @property
    def error_file(self) -> str | None:
        return None if self.error_text is not None else self.trial.error_file

    def get_error(self) -> str:
        return self.error_text if self.error_text is not None else self.trial.get_error()


def _empty_result(
    folder: Path, space: SpaceLike, storage_url: str, search_id: str = ""
) -> SearchResult:
    return SearchResult(
        search_id=search_id,
        name=space.name,
        space_file=str(getattr(space, "file", "")),
        results_dir=str(folder),
        metric=space.metric,
        mode=space.mode,
        study_storage=storage_url,
        study_name=space.name,
    )


def _prior_result(folder: Path, space: SpaceLike, storage_url: str) -> SearchResult | None:
    path = folder / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        return SearchResult.load(path)
    except (ValueError, TypeError, KeyError):  # unreadable: rebuilt from this session's events
        return _empty_result(folder, space, storage_url)


def _history_entry(result: dict[str, Any]) -> dict[str, float]:
    """The reported metrics of one result: vocabulary keys (``val/ap``, ...) and the epoch."""
    entry = {k: float(v) for k, v in result.items() if "/" in k and is_number(v)}
    if is_number(result.get("epoch")):
        entry["epoch"] = float(result["epoch"])
    return entry


def _error_of(trial: Any) -> tuple[str, bool]:
    """A failed trial's error (the last line of its traceback) and whether it diverged."""
    text = ""
    with contextlib.suppress(Exception):  # written on the driver before on_trial_error
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    if not text:
        with contextlib.suppress(Exception):
            text = trial.get_error() or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    message = lines[-1] if lines else "the trial failed"
    return message, TrialDivergedError.__name__ in str(text)
