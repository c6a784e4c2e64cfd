"""Run a search: Ray Tune executes the trials, Optuna samples them and prunes the poor ones.

The only kdtune module that imports ray. What it adds to Ray Tune's ``OptunaSearch``:

- **pruning**: Ray's ``OptunaSearch`` fixes the study's pruner to ``NopPruner``. The
  :class:`OptunaPruningScheduler` reports each evaluation (step = epoch) to the Optuna trial,
  asks the file's pruner, tells the study ``PRUNED`` and stops the Ray trial;
  :class:`PruningOptunaSearch` then keeps Ray from telling that trial ``COMPLETE`` with a
  partial value. The private parts of ``OptunaSearch`` this needs are touched only by
  :class:`PruningOptunaSearch` (``tests/test_tune_bridge.py`` checks they still exist).
- **resume**: the study lives in SQLite next to the Tune experiment; ``resume=True`` goes
  through ``Tuner.restore``, which brings back this searcher, and the searcher reconciles its
  snapshot with the study (trials the killed process had already finished or created).
- **records**: ``search.json`` (a :class:`~kdtune.results.SearchResult`) is rewritten as
  trials report and end, so a killed search still leaves a useful file.

Layout under ``<results>/<name>/``: ``search.json``, ``optuna.db`` (the study), ``space.yaml``
(the file the search started from), ``ray/`` (the Tune experiment: one folder per trial with
its checkpoints, and the state that ``resume`` restores).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from kdtune.errors import KdtuneError, TrialDiverged
from kdtune.report import Progress, estimate_eta, progress_table
from kdtune.results import (
    COMPLETE,
    FAILED,
    PRUNED,
    RAY_FOLDER,
    RUNNING,
    SEARCH_FILE,
    SPACE_COPY,
    STUDY_FILE,
    SearchResult,
    TrialRecord,
)

CONFIG_KEY = "kdtune"  # trial config: {"kdtune": {"train": {...}, "number": n, "params": {...}}}
NODE_KEY = "kdtune_node"  # added to every reported result: "<hostname>/<ray node id prefix>"
STOP_REASON_ATTR = "kdtune_stopped"  # Optuna user attribute: why a trial ended early
# AF_UNIX socket paths hold at most 107 bytes; Ray puts its sockets at
# <temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store (64 bytes after temp dir).
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_KEEP_CHECKPOINTS = 2
_STATE_OF = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED, "RUNNING": RUNNING}

TrialFn = Callable[..., Any]  # fit(config, report, *, workdir, resume_from=None)
OnTrialEnd = Callable[[TrialRecord], None]
log = logging.getLogger(__name__)


class SpaceLike(Protocol):
    """What :func:`run_search` needs of a search space (:class:`kdtune.space.SearchSpace`)."""

    name: str
    metric: str
    mode: str
    budget: Any  # num_samples, max_epochs, eval_every, max_concurrent, time_limit_s
    resources: Any  # cpu, gpu
    source_text: str

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]: ...

    def trial_config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]: ...


class TrialDivergedError(RuntimeError):
    """Raised in the trial worker for a :class:`~kdtune.errors.TrialDiverged`: its name is what
    the driver reads in the trial's error text (the only channel back from a failed worker)."""


# ---------------------------------------------------------------------------------------------
# Public API


def run_search(
    space: SpaceLike,
    *,
    results: Path,
    address: str | None = None,
    resume: bool = False,
    trial_fn: TrialFn | None = None,
    on_trial_end: OnTrialEnd | None = None,
    progress: bool = True,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchResult:
    """Run (or, with ``resume``, continue) the search ``space`` under ``results/<space.name>``.

    ``address`` (else ``$RAY_ADDRESS``) joins a running Ray cluster; otherwise Ray starts
    locally with its files under the results folder. ``trial_fn`` defaults to
    :func:`kdtune.train.fit`; ``sampler``/``pruner`` default to the space file's.
    ``on_trial_end`` is called on the driver with each trial's record as it ends.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    root = Path(results).resolve()
    folder = root / space.name
    check_start(folder, space, resume)
    folder.mkdir(parents=True, exist_ok=True)
    if not resume:
        (folder / SPACE_COPY).write_text(getattr(space, "source_text", "") or "")
    storage_url = f"sqlite:///{folder / STUDY_FILE}"
    prior = _prior_result(folder, space, storage_url) if resume else None
    monitor = _Monitor(
        prior or _empty_result(folder, space, storage_url),
        path=folder / SEARCH_FILE,
        storage_url=storage_url,
        budget=space.budget,
        on_trial_end=on_trial_end,
        progress=progress,
    )
    key = str(folder)
    _MONITORS[key] = monitor
    started = False
    temp_dir = _ray_temp_dir(folder)
    try:
        with _quiet_logs(), _ray_env(address):
            started = _start_ray(address, temp_dir)
            trainable = _trainable(trial_fn or TrainFit(root), space.resources)
            if resume:
                tuner = tune.Tuner.restore(
                    str(folder / RAY_FOLDER),
                    trainable,
                    resume_unfinished=True,
                    resume_errored=False,
                    restart_errored=False,
                )
            else:
                tuner = _new_tuner(space, folder, trainable, storage_url, key, sampler, pruner)
            monitor.start()
            limit = getattr(space.budget, "time_limit_s", None)
            if limit:  # the whole search's wall time: what earlier runs spent counts
                _DEADLINES[key] = time.monotonic() + float(limit) - monitor.prior_wall_s
            tuner.fit()
    finally:
        monitor.stop()
        _MONITORS.pop(key, None)
        _DEADLINES.pop(key, None)
        if started:
            ray.shutdown()
    if started and not temp_dir.is_relative_to(folder):
        shutil.rmtree(temp_dir, ignore_errors=True)  # the /tmp fallback: its logs go on success
    return monitor.finish()


class TrainFit:
    """The default trial function: :func:`kdtune.train.fit`, sharing ``<results>/cache``."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)

    def __call__(
        self,
        config: dict[str, Any],
        report: Callable[[int, dict[str, float], Path], None],
        *,
        workdir: Path,
        resume_from: Path | None = None,
    ) -> Any:
        from kdtune.train import fit  # torch and friends load in the trial worker only

        return fit(config, report, workdir=workdir, resume_from=resume_from, results=self.results)


# ---------------------------------------------------------------------------------------------
# The pruning bridge


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
    ) -> None:
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            sampler=sampler,
            storage=storage,
            study_name=study_name,
        )
        self._kd_pruner = pruner
        self._kd_steps: dict[str, set[int]] = {}  # steps already in the study, per Ray trial
        self._kd_final: dict[str, str] = {}  # Ray trial id -> final state name in the study
        self._kd_planned: dict[str, int] = {}  # Ray trial id -> the epochs it is to run
        self.study.pruner = pruner

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
        config = super().suggest(trial_id)
        if config is not None:
            self._kd_planned[trial_id] = _planned_epochs(config)
        return config

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
        elif done and value is not None and _finite(value):
            self._tell(trial_id, TrialState.COMPLETE, float(value))
        elif done:
            self._tell(trial_id, TrialState.FAIL, reason=f"ended without a finite {self.metric}")
        elif self._kd_steps.get(trial_id):
            self._tell(trial_id, TrialState.PRUNED, reason="stopped by the search's time limit")
        else:
            self._tell(trial_id, TrialState.FAIL, reason="never ran")

    def restore(self, checkpoint_path: str) -> None:
        """Load the snapshot, then catch up with the study, which may be ahead of it."""
        super().restore(checkpoint_path)
        self._kd_closed = False  # a resumed search may suggest again
        self._reconcile()

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

        Finished trials are noted (a restarted trial is not told twice; a pruned one is
        stopped at its first result); trials created after the snapshot, which no Ray trial
        will run, are told FAIL so that the study holds no trial RUNNING forever.
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
        for number, frozen in stored.items():
            if frozen.state == TrialState.RUNNING and number not in known:
                self.study.tell(number, state=TrialState.FAIL)


class OptunaPruningScheduler(FIFOScheduler):
    """Lets the Optuna pruner decide at each reported evaluation whether a trial goes on.

    Results are not buffered, so a trial is stopped at the evaluation that pruned it. A
    trial's last epoch is reported but never pruned: it has nothing left to save.

    It also enforces the search's time limit (``_DEADLINES[key]``, set by :func:`run_search`
    for each run): past it, running trials stop at their next evaluation (PRUNED, reason in
    the study), waiting ones are dropped and no new trial is suggested. Unlike Tune's own
    ``time_budget_s``, which stops trials without telling the searcher or the callbacks.
    """

    _supports_buffered_results = False

    def __init__(self, searcher: PruningOptunaSearch, metric: str, key: str = "") -> None:
        super().__init__()
        self._searcher = searcher
        self._metric = metric
        self._key = key

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch, value = result.get("epoch"), result.get(self._metric or "")
        if epoch is None or value is None or not _finite(value):
            return TrialScheduler.CONTINUE
        planned = _planned_epochs(trial.config)
        stop = self._searcher.report_epoch(
            trial.trial_id, int(epoch), float(value), may_prune=int(epoch) < planned
        )
        if stop or (int(epoch) < planned and self._out_of_time()):
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if not self._out_of_time():
            return super().choose_trial_to_run(tune_controller)
        for trial in list(tune_controller.get_trials()):
            if trial.status == "PENDING":
                tune_controller.stop_trial(trial)
        return None

    def _out_of_time(self) -> bool:
        deadline = _DEADLINES.get(self._key)
        if deadline is None or time.monotonic() < deadline:
            return False
        self._searcher.close()
        return True


_DEADLINES: dict[str, float] = {}  # search folder -> time.monotonic() at which its run stops


# ---------------------------------------------------------------------------------------------
# Ray set-up


def check_start(folder: Path, space: SpaceLike, resume: bool) -> None:
    """Refuse to overwrite a search, or to resume one that does not exist or has changed."""
    experiment = folder / RAY_FOLDER
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            if folder.exists():
                raise KdtuneError(
                    f"--resume: search {space.name!r} in {folder} stopped before its first "
                    "snapshot, so it cannot be resumed; delete that folder to start it again"
                )
            raise KdtuneError(
                f"--resume: no search named {space.name!r} to resume under {folder.parent}"
            )
        saved = folder / SPACE_COPY
        text = getattr(space, "source_text", "") or ""
        if saved.is_file() and text and saved.read_text() != text:
            raise KdtuneError(
                f"--resume: the search-space file differs from the one search {space.name!r} "
                f"started with ({saved}); resume with that file or start a new search"
            )
        return
    if any((folder / name).exists() for name in (RAY_FOLDER, SEARCH_FILE, STUDY_FILE)):
        raise KdtuneError(
            f"{folder}: a search named {space.name!r} already exists; pass --resume to "
            "continue it, or choose another --results folder or search name"
        )


def _ray_temp_dir(folder: Path) -> Path:
    """Ray's session folder: under the results folder when its sockets' paths fit, else /tmp."""
    candidate = folder / ".ray"
    if len(str(candidate)) + _SOCKET_SUFFIX <= _SOCKET_PATH_MAX:
        return candidate
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    return Path("/tmp") / f"kdtune-ray-{digest}"


def _start_ray(address: str | None, temp_dir: Path) -> bool:
    """Join ``address`` or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            _temp_dir=str(temp_dir),
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    return True


@contextlib.contextmanager
def _ray_env(address: str | None) -> Iterator[None]:
    """Environment for Ray while the search runs; restored afterwards.

    Local runs disable Ray 2.60's token auth (it would write ``~/.ray/auth_token``); Ray's own
    progress output is off (kdtune shows its own).
    """
    wanted = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    if not address:
        wanted["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
    old = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep Ray Tune's and Optuna's chatter (trial tracebacks included) off the terminal.

    Trial errors are kept in each trial's record and its ``error.txt``.
    """
    names = ("ray", "ray.tune", "ray.train", "ray.air")
    old = {n: logging.getLogger(n).level for n in names}
    verbosity = optuna.logging.get_verbosity()
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)
        optuna.logging.set_verbosity(verbosity)


class _DefineByRun:
    """The define-by-run space for ``OptunaSearch``: sample, then build the full config."""

    def __init__(self, space: SpaceLike) -> None:
        self.space = space

    def __call__(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        overrides = self.space.suggest(trial)
        train = self.space.trial_config(overrides)
        return {CONFIG_KEY: {"train": train, "number": trial.number, "params": dict(trial.params)}}


def _new_tuner(
    space: SpaceLike,
    folder: Path,
    trainable: Any,
    storage_url: str,
    key: str,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
) -> tune.Tuner:
    if sampler is None or pruner is None:
        from kdtune.space import make_pruner, make_sampler

        sampler = sampler or make_sampler(space)  # type: ignore[arg-type]
        pruner = pruner or make_pruner(space)  # type: ignore[arg-type]
    searcher = PruningOptunaSearch(
        _DefineByRun(space),
        metric=space.metric,
        mode=space.mode,
        sampler=sampler,
        pruner=pruner,
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=space.name,
    )
    budget = space.budget
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=OptunaPruningScheduler(searcher, space.metric, key),
            num_samples=budget.num_samples,
            max_concurrent_trials=budget.max_concurrent or None,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=RAY_FOLDER,
            storage_path=str(folder),
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_KEEP_CHECKPOINTS),
            verbose=0,
            callbacks=[_MonitorCallback(key)],
        ),
    )


def _trial_name(trial: Any) -> str:
    number = trial.config.get(CONFIG_KEY, {}).get("number")
    return f"trial_{number:04d}_{trial.trial_id}" if number is not None else trial.trial_id


# ---------------------------------------------------------------------------------------------
# The trainable (runs in the Ray trial worker)


def _trainable(trial_fn: TrialFn, resources: Any) -> Any:
    cpu, gpu = float(resources.cpu), float(resources.gpu)
    fn = tune.with_parameters(_run_trial, trial_fn=trial_fn, cpu=cpu)
    return tune.with_resources(fn, {"cpu": cpu, "gpu": gpu})


def _run_trial(config: dict[str, Any], *, trial_fn: TrialFn, cpu: float) -> None:
    """One trial: the trial function with a ``report`` that feeds Ray Tune, resumed if asked."""
    _set_torch_threads(cpu)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    workdir = Path(tune.get_context().get_trial_dir()) / "work"

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        payload: dict[str, Any] = {k: float(v) for k, v in metrics.items() if _number(v)}
        payload.update({"epoch": int(epoch), NODE_KEY: node})
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(payload, checkpoint=checkpoint)

    with contextlib.ExitStack() as stack:
        checkpoint = tune.get_checkpoint()
        resume_from = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        try:
            trial_fn(
                dict(config[CONFIG_KEY]["train"]), report, workdir=workdir, resume_from=resume_from
            )
        except TrialDiverged as exc:
            raise TrialDivergedError(f"{type(exc).__name__}: {exc}") from exc


def _set_torch_threads(cpu: float) -> None:
    """Ray sets OMP_NUM_THREADS=1 in workers: give torch the trial's CPUs instead.

    torch reads the variable when it is first imported (by the trial function); a worker
    that already imported it is set directly. Toy trials never pay for importing torch.
    """
    threads = max(1, int(cpu))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Driver side: records, search.json, the live view


_MONITORS: dict[str, _Monitor] = {}  # search folder -> the monitor of the search running there


class _MonitorCallback(tune.Callback):
    """Forwards Tune's events to the search's :class:`_Monitor` (found by key, so that the
    copy of this callback that ``Tuner.restore`` unpickles reaches the live monitor)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if (m := _MONITORS.get(self.key)) is not None:
            m.trial_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (m := _MONITORS.get(self.key)) is not None:
            m.trial_end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (m := _MONITORS.get(self.key)) is not None:
            m.trial_end(trial, errored=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if (m := _MONITORS.get(self.key)) is not None:
            m.refresh()


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
                best_value=best.best_value(result.metric, result.mode) if best else None,
                best_trial=best.trial_id if best else None,
                elapsed_s=result.wall_s,
                eta_s=estimate_eta(elapsed, self.epochs_now, left),
                epochs_done=result.epochs_spent(),
                epochs_budget=n * max_epochs,
            )
        )


def _empty_result(folder: Path, space: SpaceLike, storage_url: str) -> SearchResult:
    return SearchResult(
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
    entry = {k: float(v) for k, v in result.items() if "/" in k and _number(v)}
    if _number(result.get("epoch")):
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


def _planned_epochs(config: dict[str, Any]) -> int:
    train = config.get(CONFIG_KEY, {}).get("train", {})
    return int(train.get("epochs", 0) or 0)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)
