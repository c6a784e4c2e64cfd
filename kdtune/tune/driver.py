"""Run a search: Ray Tune executes the trials, Optuna samples them and prunes the poor ones.

The search driver: Ray's set-up (a local Ray with its files under the results folder, or a
running cluster), a new Tune experiment or one restored, and the check that a search is
neither overwritten nor resumed from a changed file. The pruning is
:mod:`kdtune.tune.bridge`'s, the trial worker :mod:`kdtune.tune.trial`'s, the records
:mod:`kdtune.tune.records`'.

- **resume**: the study lives in SQLite next to the Tune experiment; ``resume=True`` goes
  through ``Tuner.restore``, which brings back the searcher, and the searcher reconciles its
  snapshot with the study (trials the killed process had already finished or created). A
  resumed search must start from the same search-space file (its copy, ``space.yaml``).
- **time limit**: the whole search's wall time; what earlier runs spent counts.
- **populations** (``budget.population`` > 1, opt-in): each Ray trial trains several Optuna
  trials as one population (:class:`~kdtune.tune.bridge.PopulationOptunaSearch`, the trial's
  :func:`~kdtune.tune.trial._run_population`), each member recorded as a trial of its own
  (:class:`~kdtune.tune.records._PopulationMonitor`). With 1, the default, none of it is used.

Layout under ``<results>/<name>/``: ``search.json``, ``optuna.db`` (the study), ``space.yaml``
(the file the search started from), ``ray/`` (the Tune experiment: one folder per trial with
its checkpoints, and the state that ``resume`` restores).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.results import RAY_FOLDER, SEARCH_FILE, SPACE_COPY, STUDY_FILE, SearchResult
from kdtune.tune.bridge import (
    OptunaPruningScheduler,
    PopulationOptunaSearch,
    PruningOptunaSearch,
    _DefineByRun,
)
from kdtune.tune.protocol import CONFIG_KEY, LiveRun, OnTrialEnd, SpaceLike, TrialFn
from kdtune.tune.records import (
    _empty_result,
    _Monitor,
    _MonitorCallback,
    _PopulationMonitor,
    _prior_result,
)
from kdtune.tune.trial import TrainFit, _population_trainable, _trainable

# AF_UNIX socket paths hold at most 107 bytes; Ray puts its sockets at
# <temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store (64 bytes after temp dir).
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_KEEP_CHECKPOINTS = 2
# a local Ray whose own processes died (a signal to the whole process group): its driver
# gives up on the GCS this soon (Ray's default is 60 s); kdtune's watch of those processes
# (:meth:`_Interrupts.watch`) saves the search and exits before that
_GCS_GONE_S = 20
_WATCH_EVERY_S = 0.1
LOOPBACK = "127.0.0.1"


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
    search_id: str = "",
    on_abandon: Callable[[SearchInterrupted], SearchInterrupted] | None = None,
) -> SearchResult:
    """Run (or, with ``resume``, continue) the search ``space`` under ``results/<space.name>``.

    ``address`` (else ``$RAY_ADDRESS``) joins a running Ray cluster; otherwise Ray starts
    locally with its files under the results folder. ``trial_fn`` defaults to
    :func:`kdtune.train.fit`; ``sampler``/``pruner`` default to the space file's.
    ``on_trial_end`` is called on the driver with each trial's record as it ends.
    ``search_id`` names a new search apart from earlier ones of its name (a resumed search
    keeps its own). SIGINT or SIGTERM raise :class:`~kdtune.errors.SearchInterrupted` once
    the state is saved (see :class:`_Interrupts`).

    When the signal also ended a local Ray's own processes (it reached the whole process
    group), Tune's loop can never return: the search's records are saved as they stand,
    ``on_abandon`` (the caller's own handling of the interruption, in another thread) turns
    the interruption into the one it reports, and the process prints its line and exits with
    ``128 + signum``.
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
    population = search_population(space)
    monitor = (_Monitor if population == 1 else _PopulationMonitor)(
        prior or _empty_result(folder, space, storage_url, search_id),
        path=folder / SEARCH_FILE,
        storage_url=storage_url,
        budget=space.budget,
        on_trial_end=on_trial_end,
        progress=progress,
    )
    # this run's state, handed to the searcher, scheduler and callback (and to the copies that
    # Tuner.restore unpickles): the monitor, the signal handling, where the study and the
    # experiment are now (a moved results folder), the time limit
    live = LiveRun(monitor=monitor, storage_url=storage_url, folder=str(folder))
    interrupts = _Interrupts(live)
    watch = _watcher(interrupts, monitor, monitor.finish, on_abandon)
    with ray_session(address, folder, watch), _members_only(population != 1):
        resources = trial_resources(space, ray.cluster_resources())
        size = population_size(population, resources, space)
        make = _trainable if population == 1 else _population_trainable
        trainable = make(trial_fn or TrainFit(root), resources)
        try:
            check_resources(resources, ray.cluster_resources())
            if resume:
                tuner = restore_tuner(folder / RAY_FOLDER, trainable, live)
            else:
                tuner = _new_tuner(
                    space, folder, trainable, storage_url, live, sampler, pruner, size
                )
            monitor.start()
            limit = getattr(space.budget, "time_limit_s", None)
            if limit:  # the whole search's wall time: what earlier runs spent counts
                live.deadline = time.monotonic() + float(limit) - monitor.prior_wall_s
            fit(tuner, interrupts)
        finally:
            monitor.stop()
    result = monitor.finish()
    if interrupts.caught:
        raise SearchInterrupted(interrupts.caught, result=result)
    return result


@contextlib.contextmanager
def ray_session(address: str | None, folder: Path, watch: Callable[[], None]) -> Iterator[None]:
    """Ray for one Tune experiment under ``folder``: joined at ``address``, or started here
    (then watched with ``watch()`` and shut down at the end; its files under ``folder``, or
    in /tmp, removed after a run that ended well); its and Optuna's chatter kept quiet."""
    temp_dir = _ray_temp_dir(folder)
    started = False
    try:
        with _quiet_logs(), _ray_env(address):
            started = _start_ray(address, temp_dir)
            if started:
                watch()
            yield
    finally:
        if started:
            ray.shutdown()
    if started and not temp_dir.is_relative_to(folder):
        shutil.rmtree(temp_dir, ignore_errors=True)  # the /tmp fallback: its logs go on success


def restore_tuner(experiment: Path, trainable: Any, live: LiveRun) -> tune.Tuner:
    """The Tune experiment at ``experiment``, restored, its unpickled searcher, scheduler and
    callbacks handed this run's state. Reads Ray's ``Tuner._local_tuner`` (its
    ``_tune_config`` and ``_run_config``); ``tests/test_tune_bridge.py`` checks they exist."""
    tuner = tune.Tuner.restore(
        str(experiment),
        trainable,
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
    )
    internal: Any = tuner._local_tuner
    config, run = internal._tune_config, internal._run_config
    for part in (config.search_alg, config.scheduler, *(run.callbacks or [])):
        if hasattr(part, "kd_attach"):
            part.kd_attach(live)
    return tuner


def fit(tuner: tune.Tuner, interrupts: _Interrupts) -> None:
    """Run Tune's loop with the signal handling in place (see :class:`_Interrupts`)."""
    with interrupts:
        try:
            tuner.fit()
        except KeyboardInterrupt:  # a signal outside Tune's loop (restore, set-up)
            interrupts.caught = interrupts.caught or signal.SIGINT


class _Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM (docker stop, systemd, cluster managers) stop a search at
    each running trial's next checkpoint; a second signal stops it at once. Either way Tune
    saves its state with those trials unfinished (PAUSED at their checkpoint, or RUNNING), their
    Optuna trials stay RUNNING, and a resume continues each from its last checkpoint.
    ``caught`` says which signal came.

    The first signal: the scheduler pauses each trial at its next result (every result carries
    a checkpoint), starts none and the searcher suggests none (the run's ``stopping``, for a
    run given as ``live``; without one, the first signal ends Tune's loop at once); once no trial
    runs, :meth:`settle` (called after each step of Tune's loop) calls Tune's own SIGINT
    handler, which ends the loop and saves the state. Tune installs that handler inside ``fit``
    (over this object's), so :meth:`arm` puts this object's back on top at the first step and
    keeps Tune's to call. SIGTERM's default here is Ray's handler (a native stack dump, exit
    134): replaced too. Outside the main thread, where no handler can be set, nothing changes.
    """

    def __init__(self, live: LiveRun | None = None) -> None:
        self.live = live  # the run whose searcher and scheduler stop at the next checkpoint
        self.caught: int = 0
        self._old: dict[int, Any] = {}
        self._tune: Any = None  # Tune's SIGINT handler, once armed
        self._armed = False
        self._heads: list[tuple[bool, Any]] = []  # a local Ray's processes: (essential, Popen)
        self._on_lost: Callable[[int], None] | None = None
        self._done = threading.Event()

    def watch(self, heads: list[tuple[bool, Any]], on_lost: Callable[[int], None]) -> None:
        """After a signal, watch a local Ray's processes ``heads`` (``(essential, Popen)``);
        once the signal has reached them too (one was killed by a signal, or an essential one
        ended), call ``on_lost(signum)`` from the watching thread: Tune's loop is then stuck on
        Ray calls that only end when Ray gives up on its GCS. Ray's Python helpers die at
        once; its GCS and raylet drain for seconds first."""
        self._heads, self._on_lost = heads, on_lost

    def _ray_lost(self) -> bool:
        return any(
            p.poll() is not None and (essential or p.returncode < 0) for essential, p in self._heads
        )

    def _watch(self) -> None:
        while not self._done.wait(_WATCH_EVERY_S):
            if self._ray_lost():
                if self._on_lost is not None and not self._done.is_set():
                    self._on_lost(self.caught)
                return

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if self.live is not None:
            self.live.interrupts = self  # armed and settled in Tune's loop by the callback
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._old and not self._armed and signal.getsignal(signal.SIGINT) == self._on_signal:
            self.caught = self.caught or signal.SIGINT  # Tune's handler ran and put ours back
        if self.live is not None:
            self.live.interrupts, self.live.stopping = None, False
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def arm(self) -> None:
        """Inside Tune's loop: this object's handler over Tune's, which it keeps to call."""
        if self._tune is not None or not self._old:
            return
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler != self._on_signal:
            self._tune, self._armed = handler, True
            signal.signal(signal.SIGINT, self._on_signal)

    def settle(self, trials: list[Any]) -> None:
        """After a step of Tune's loop: once stopping and no trial runs, end the loop."""
        stopping = self.live is not None and self.live.stopping
        if stopping and not any(t.status == "RUNNING" for t in trials):
            self._stop_now()

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.caught
        self.caught = self.caught or signum
        if first and self._heads:
            threading.Thread(target=self._watch, name="kdtune-ray-watch", daemon=True).start()
        if self._tune is None:  # before Tune's first step: Tune's handler if it is in place
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler) and handler != self._on_signal:
                handler(signal.SIGINT, frame)  # stops the loop at once, saves the state
                return
            raise KeyboardInterrupt  # set-up, restore: stop there
        if first and self.live is not None:
            self.live.stopping = True
            print(
                f"{signal.Signals(signum).name}: stopping each trial at its next checkpoint "
                "(Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )
        else:
            self._stop_now()

    def _stop_now(self) -> None:
        tune_handler, self._tune = self._tune, None
        if self.live is not None:
            self.live.stopping = False
        if callable(tune_handler):
            tune_handler(signal.SIGINT, None)  # Tune's: end the loop, save the state
        signal.signal(signal.SIGINT, self._on_signal)  # a later signal: KeyboardInterrupt


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


def trial_resources(space: SpaceLike, cluster: dict[str, float], say: bool = True) -> Any:
    """What each trial reserves: the space file's resources, or, with ``resources: auto``,
    those settled from what Ray sees (:meth:`kdtune.space.Resources.settle`), said in one line
    on stderr."""
    settle = getattr(space.resources, "settle", None)
    if settle is None:
        return space.resources
    device = str(space.trial_config().get("device", "auto"))
    resources, line = settle(cluster, int(space.budget.max_concurrent), device)
    if line and say:
        print(line, file=sys.stderr, flush=True)
    return resources


def check_resources(resources: Any, cluster: dict[str, float]) -> None:
    """Refuse a trial that no node of the Ray cluster can ever hold: Ray would wait for it
    forever, in silence (its warning is muted with the rest of its output)."""
    for name, key in (("cpu", "CPU"), ("gpu", "GPU")):
        wanted, present = float(getattr(resources, name)), float(cluster.get(key, 0.0))
        if wanted > present:
            raise KdtuneError(
                f"resources.{name}: a trial asks for {wanted:g} {key}, the Ray cluster has "
                f"{present:g}; lower it in the space file or join a cluster that has them"
            )


def _start_ray(address: str | None, temp_dir: Path) -> bool:
    """Join ``address`` or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        temp_dir.mkdir(parents=True, exist_ok=True)
        with _loopback_only():
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                _temp_dir=str(temp_dir),
                logging_level=logging.WARNING,
                log_to_driver=False,
                # a local Ray's GCS never comes back (no fault tolerance without Redis): when
                # a signal to the whole process group has ended it, give up after seconds
                _system_config={"gcs_rpc_server_reconnect_timeout_s": _GCS_GONE_S},
            )
    return True


def _watcher(
    interrupts: _Interrupts,
    monitor: Any,
    saved: Callable[[], object],
    on_abandon: Callable[[SearchInterrupted], SearchInterrupted] | None,
) -> Callable[[], None]:
    """What :func:`ray_session` calls once it started a local Ray: :func:`watch_local_ray`."""
    return lambda: watch_local_ray(interrupts, monitor, saved, on_abandon)


def watch_local_ray(
    interrupts: _Interrupts,
    monitor: Any,
    saved: Callable[[], object],
    on_abandon: Callable[[SearchInterrupted], SearchInterrupted] | None,
) -> None:
    """Once a signal has come, watch the local Ray this process started; should the signal
    have reached Ray's own processes too (Ray is lost), Tune's loop cannot end: stop
    ``monitor``, save the records (``saved()``, the interruption's result), let ``on_abandon``
    (the pipeline's interruption policy) turn the interruption into the one to report, print
    its line and exit with ``128 + signum``."""

    def abandon(signum: int) -> None:
        exc = SearchInterrupted(signum)
        try:
            monitor.stop()
            exc = SearchInterrupted(signum, result=saved())
            if on_abandon is not None:
                exc = on_abandon(exc)
        finally:  # whatever failed above, the line and the exit code
            _exit_with(exc)

    interrupts.watch(_head_processes(), abandon)


def _head_processes() -> list[tuple[bool, Any]]:
    """The processes (``subprocess.Popen``) of the local Ray this process started, each
    with whether it is essential (the GCS, the raylet). From Ray's private
    ``Node.all_processes``; ``tests/test_tune_bridge.py`` checks that it is still there."""
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    essential = (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET)
    return [(kind in essential, i.process) for kind, infos in processes.items() for i in infos]


def _exit_with(exc: SearchInterrupted) -> None:
    """Print the interruption's line and end the process now (its main thread is stuck)."""
    sys.stdout.flush()
    print(exc.line, file=sys.stderr, flush=True)
    os._exit(exc.exit_code)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray listens on 127.0.0.1 only, not on the host's network address.

    ``ray.init`` turns a loopback ``_node_ip_address`` into the host's address unless Ray
    runs without cluster support (its constant ``ENABLE_RAY_CLUSTER``, read at import from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``): off while this local Ray starts, as on a laptop.
    ``tests/test_tune_bridge.py`` checks that the constant still exists.
    """
    from ray._private import ray_constants

    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


@contextlib.contextmanager
def _ray_env(address: str | None) -> Iterator[None]:
    """Environment for Ray while the search runs; restored afterwards.

    Local runs disable Ray 2.60's token auth (it would write ``~/.ray/auth_token``); Ray's own
    progress output is off (kdtune shows its own), and so are its automatic loggers (the JSON
    and CSV ones are added back explicitly, TensorBoard's is not).
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
def _members_only(on: bool) -> Iterator[None]:
    """A search whose trials are populations: their results carry each member's metric
    (``m<k>|val/ap``), not the search's metric itself, which Tune checks every result for
    unless told not to (``TUNE_DISABLE_STRICT_METRIC_CHECKING``, read on the driver)."""
    key = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    old = os.environ.get(key)
    if on:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


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


def search_population(space: SpaceLike) -> int | str:
    """The space's ``budget.population`` (1 for a space that has none)."""
    return getattr(space.budget, "population", 1)


def population_size(population: int | str, resources: Any, space: SpaceLike) -> int:
    """The members of a search's population trial: ``population``, or for ``auto`` 1 where
    the trials get no GPU or run on the CPU (a population does not pay there), else
    ``budget.num_samples`` (the trial splits them into as many populations as its GPU holds,
    :func:`kdtune.population_fit.fit_populations`)."""
    if population != "auto":
        return int(population)
    device = str(space.trial_config().get("device", "auto"))
    if float(resources.gpu) <= 0 or device == "cpu":
        return 1
    return max(1, int(space.budget.num_samples))


def _new_tuner(
    space: SpaceLike,
    folder: Path,
    trainable: Any,
    storage_url: str,
    live: LiveRun,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
    population: int = 1,
) -> tune.Tuner:
    if sampler is None or pruner is None:
        from kdtune.space import make_pruner, make_sampler

        sampler = sampler or make_sampler(space)  # type: ignore[arg-type]
        pruner = pruner or make_pruner(space)  # type: ignore[arg-type]
    # budget.population > 1: each Ray trial a population of that many Optuna trials
    extra: dict[str, Any] = {"total": space.budget.num_samples}
    if population > 1:
        extra["population"] = population
    searcher = (PopulationOptunaSearch if population > 1 else PruningOptunaSearch)(
        _DefineByRun(space),
        # a fresh study only (a resumed one holds them already): enqueued, so they run first
        points_to_evaluate=space.warm_start_points() or None,
        metric=space.metric,
        mode=space.mode,
        sampler=sampler,
        pruner=pruner,
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=space.name,
        **extra,
    )
    searcher.kd_attach(live)
    budget = space.budget
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=OptunaPruningScheduler(searcher, space.metric, live),
            num_samples=budget.num_samples,
            max_concurrent_trials=budget.max_concurrent or None,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=RAY_FOLDER,
            storage_path=str(folder),
            # a trial whose worker or node died restarts from its last checkpoint this often
            failure_config=tune.FailureConfig(max_failures=getattr(budget, "max_failures", 0)),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_KEEP_CHECKPOINTS),
            verbose=0,
            # Tune's own result files (result.json, progress.csv per trial), so that Ray's
            # ExperimentAnalysis and Tuner.restore(...).get_results() read a kdtune search;
            # TensorBoard event files stay off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS)
            callbacks=[
                _MonitorCallback(space.name, live),
                JsonLoggerCallback(),
                CSVLoggerCallback(),
            ],
        ),
    )


def _trial_name(trial: Any) -> str:
    number = trial.config.get(CONFIG_KEY, {}).get("number")
    return f"trial_{number:04d}_{trial.trial_id}" if number is not None else trial.trial_id
