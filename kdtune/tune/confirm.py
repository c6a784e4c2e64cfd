"""The confirmation stage: the search's best configurations and the seed's default, trained
again with further seeds, under Ray Tune like any trial.

- **Plan** (:func:`confirm_candidates`, :func:`confirm_points`; :func:`confirm_plan` is the
  first round): the ``top_k`` best complete trials other than the references (distinct β
  schedules, by the search's value) and the references (the seed default, α = 1) at the best
  trial's other settings, each with the seeds after the search's ``seed``, at the search's
  full budget. :mod:`kdtune.search.confirmation` races them in rounds. The search's own run
  (seed ``seed``) is left out of the ranking: it is the run that selected the configuration,
  so its value is biased upwards (the winner's curse). A confirmation run evaluates once, at
  its last epoch, and keeps its validation detections for the paired verdict.
- **Runs** (:func:`run_confirm`): one Tune experiment per racing round under
  ``<results>/<name>/confirm/round<N>/``
  (a grid of (configuration, seed) runs, no searcher, no pruning; resumable), with the
  search's trainable, resources and concurrency. Each finished run is added to the search's
  Optuna study as a trial of its own, with no parameters (nothing sampled it) and the user
  attributes ``stage=confirm``, ``round``, its schedule, seed and Ray trial id; the driver
  logs it to MLflow as a child run tagged ``stage=confirm`` and ``kdtune.round``.
- **Populations** (``confirm.population``, :func:`population_points`): with P > 1 a round's
  runs of one seed are grouped (:func:`kdtune.population_fit.populations`) and each group of
  two or more is one Ray trial that trains them as populations; each member is recorded, added
  to the study and logged as a run of its own (:class:`~kdtune.tune.records._PopulationMonitor`),
  with the id ``<Ray trial id>_member<k>``. A population trial is not resumed mid-run: one
  interrupted is trained again from its start when the search resumes.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.results import (
    COMPLETE,
    CONFIRM_FOLDER,
    CONFIRM_STAGE,
    FAILED,
    RAY_FOLDER,
    SEARCH_FILE,
    STUDY_FILE,
    SearchResult,
    TrialRecord,
)
from kdtune.schedules import words
from kdtune.tune.driver import (
    _Interrupts,
    _watcher,
    fit,
    ray_session,
    restore_tuner,
    trial_resources,
)
from kdtune.tune.protocol import (
    CONFIG_KEY,
    MEMBERS_KEY,
    LiveRun,
    OnTrialEnd,
    SpaceLike,
    TrialFn,
)
from kdtune.tune.records import _Monitor, _MonitorCallback, _PopulationMonitor
from kdtune.tune.trial import TrainFit, _population_trainable, _trainable

STAGE_ATTR = "stage"  # Optuna user attribute (and MLflow tag) of a confirmation run


def confirm_candidates(
    result: SearchResult,
    *,
    top_k: int,
    references: Sequence[str],
    order: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The configurations a confirmation races (schedule spec → the trial config it trains,
    its seed still the search's): the ``top_k`` best complete trials whose schedule is none of
    ``references`` (distinct schedules, by the search's value), then each reference (the seed
    default, α = 1) at the search's best trial's other settings (lr, batch size, anything
    searched besides the weighting), so that a comparison with a reference is one of weighting
    alone. ``order`` (schedule specs, best first: the pooled model's) replaces the search's
    value as the order candidates are taken in; schedules it leaves out come after, by value.
    Empty when no search trial completed."""
    sign = 1.0 if result.mode == "max" else -1.0
    scored = sorted(
        (t for t in result.trials if t.state == COMPLETE and t.value(result.metric) is not None),
        key=lambda t: -sign * (t.value(result.metric) or 0.0),
    )
    if not scored:
        return {}
    best = scored[0].config
    if order is not None:
        place = {spec: i for i, spec in enumerate(order)}
        scored.sort(key=lambda t: place.get(t.reported_schedule, len(place)))
    configs: dict[str, dict[str, Any]] = {}
    for record in scored:
        if len(configs) == top_k:
            break
        if record.reported_schedule not in references:
            configs.setdefault(record.reported_schedule, record.config)
    for spec in references:
        configs.setdefault(spec, {**best, "schedule": spec})
    return configs


def confirm_points(
    configs: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    *,
    round: int = 1,
    eval_every: int | None = None,
) -> list[dict[str, Any]]:
    """The Ray trial configs of one round: every configuration of ``configs`` with every seed
    of ``seeds``, at the search's full budget, evaluated (and checkpointed) every
    ``eval_every`` epochs, or only at the end (None): a run is judged by its final AP."""
    points = []
    for spec, config in configs.items():
        for seed in seeds:
            every = int(config["epochs"]) if eval_every is None else eval_every
            train = {**config, "seed": seed, "eval_every": min(every, int(config["epochs"]))}
            points.append(
                {
                    "train": train,
                    "number": None,
                    "params": {},
                    "stage": CONFIRM_STAGE,
                    "schedule": spec,
                    "seed": seed,
                    "round": round,
                }
            )
    return points


def base_seed(result: SearchResult) -> int:
    """The search's training seed: confirmation seeds are the ones after it."""
    best = result.best
    return int(best.config.get("seed", 0)) if best is not None else 0


def confirm_plan(
    result: SearchResult,
    *,
    top_k: int,
    seeds: int,
    default_schedule: str,
    ground_truth: str | None = None,
) -> list[dict[str, Any]]:
    """The first round's Ray trial configs (see the module's docstring): the candidates of
    :func:`confirm_candidates` with the seeds ``seed + 1 … seed + seeds``; none when no search
    trial completed."""
    references = [default_schedule] + ([ground_truth] if ground_truth else [])
    configs = confirm_candidates(result, top_k=top_k, references=references)
    first = base_seed(result)
    return confirm_points(configs, range(first + 1, first + seeds + 1))


def run_confirm(
    space: SpaceLike,
    points: list[dict[str, Any]],
    *,
    results: Path,
    address: str | None = None,
    trial_fn: TrialFn | None = None,
    on_trial_end: OnTrialEnd | None = None,
    progress: bool = True,
    on_abandon: Callable[[SearchInterrupted], SearchInterrupted] | None = None,
    round: int = 1,
    population: int | str = 1,
) -> list[TrialRecord]:
    """Run the confirmation runs ``points`` of racing round ``round`` (resuming an
    interrupted round; a round whose runs all ended is read back, not run); their records.
    ``population`` (``confirm.population``): 1, one Ray trial a run; P > 1 or ``auto``, runs
    of one seed trained as populations (see the module's docstring).

    A signal raises :class:`~kdtune.errors.SearchInterrupted` with the records as its result;
    one that reached a local Ray's own processes too ends the process, after ``on_abandon``
    (see :func:`kdtune.tune.driver.watch_local_ray`)."""
    root = Path(results).resolve()
    folder = round_folder(root / space.name, round)
    experiment = folder / RAY_FOLDER
    done = _ended(folder / SEARCH_FILE, points)
    if done is not None:
        return done
    resume = tune.Tuner.can_restore(str(experiment))
    if not resume and folder.exists():
        shutil.rmtree(folder)  # stopped before its first snapshot: nothing to keep
    folder.mkdir(parents=True, exist_ok=True)
    storage_url = f"sqlite:///{folder.parent.parent / STUDY_FILE}"
    prior = _prior(folder / SEARCH_FILE) if resume else None
    metric = space.metric

    def ended(record: TrialRecord) -> None:
        _add_to_study(storage_url, space.name, record, metric)
        if on_trial_end is not None:
            on_trial_end(record)

    monitor = (_Monitor if population == 1 else _PopulationMonitor)(
        prior or _stage_result(space, folder, storage_url),
        path=folder / SEARCH_FILE,
        storage_url=storage_url,
        budget=SimpleNamespace(
            num_samples=len(points),
            max_epochs=max((int(p["train"]["epochs"]) for p in points), default=0),
        ),
        on_trial_end=ended,
        progress=progress,
    )
    live = LiveRun(monitor=monitor, storage_url=storage_url, folder=str(folder))
    # Ctrl-C or SIGTERM: Tune's own handler ends the loop at once and saves the stage; a
    # resume continues each unfinished run from its last checkpoint (every eval_every epochs,
    # as the search's trials)
    interrupts = _Interrupts()
    watch = _watcher(interrupts, monitor, lambda: monitor.finish().trials, on_abandon)
    with ray_session(address, folder.parent.parent, watch):
        resources = trial_resources(space, ray.cluster_resources(), say=False)
        size = population_size(population, resources, points)
        if population == 1:
            trainable = _trainable(trial_fn or TrainFit(root), resources)
        else:
            trainable = _population_trainable(trial_fn or TrainFit(root), resources)
        try:
            if resume:
                tuner = restore_tuner(experiment, trainable, live)
            else:
                grid = points if size == 1 else population_points(points, size)
                tuner = _tuner(trainable, grid, folder, live, space.budget.max_concurrent)
            monitor.start()
            fit(tuner, interrupts)
        finally:
            monitor.stop()
    runs = monitor.finish().trials
    if population != 1:  # the plan's order, as one run a trial gives it
        order = {(p["schedule"], int(p["seed"])): i for i, p in enumerate(points)}
        runs.sort(key=lambda r: order.get((r.reported_schedule, int(r.config.get("seed", 0))), 0))
    if interrupts.caught:
        raise SearchInterrupted(interrupts.caught, result=runs)
    return runs


def population_size(population: int | str, resources: Any, points: list[dict[str, Any]]) -> int:
    """The most members of a population trial: ``population``, or for ``auto`` 1 where the
    trials get no GPU (``resources``: a trial's, settled; a population does not pay on a CPU)
    and else the round's runs (the trial splits a group into as many populations as its GPU
    holds, see :func:`kdtune.population_fit.fit_populations`)."""
    if population != "auto":
        return int(population)
    on_cpu = float(resources.gpu) <= 0 or all(
        str(p["train"].get("device", "auto")) == "cpu" for p in points
    )
    return 1 if on_cpu else max(1, len(points))


def population_points(points: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The Ray trial configs of a round trained in populations of at most ``size`` runs: each
    group of :func:`kdtune.population_fit.populations` (runs of one seed and set-up) of two or
    more runs as one trial config holding its runs' under ``members``; a run alone, or runs
    that cannot train as a population (:func:`kdtune.population_fit.check_members`: a level
    that does not fuse, say), as they are."""
    from kdtune.config import TrainConfig  # torch: in the driver only for populations
    from kdtune.population_fit import populations

    configs = [TrainConfig.from_dict(p["train"]) for p in points]
    grid: list[dict[str, Any]] = []
    for group in sorted(populations(configs, size)):  # in the order of their first runs
        if len(group) == 1 or not _can_fuse([configs[i] for i in group]):
            grid.extend(points[i] for i in group)
            continue
        members = [points[i] for i in group]
        grid.append(
            {
                MEMBERS_KEY: members,
                "number": None,
                "params": {},
                "stage": CONFIRM_STAGE,
                "schedule": f"population{len(members)}",
                "seed": members[0]["seed"],
                "round": members[0]["round"],
            }
        )
    return grid


def _can_fuse(configs: list[Any]) -> bool:
    """Whether the runs ``configs`` (TrainConfigs) can train as one population."""
    from kdtune.population_fit import check_members

    try:
        check_members(configs)
    except KdtuneError:
        return False
    return True


def round_folder(search_folder: Path, round: int) -> Path:
    """Where racing round ``round`` of a search keeps its Tune experiment and records."""
    return Path(search_folder) / CONFIRM_FOLDER / f"round{round}"


def _ended(path: Path, points: list[dict[str, Any]]) -> list[TrialRecord] | None:
    """The records of a round whose every run ended (a resumed search passing it again),
    else None."""
    prior = _prior(path)
    if prior is None:
        return None
    wanted = {(p["schedule"], int(p["seed"])) for p in points}
    ended = {
        (t.reported_schedule, int(t.config.get("seed", 0))): t
        for t in prior.trials
        if t.state in (COMPLETE, FAILED)
    }
    if not wanted <= set(ended):
        return None
    return [ended[(p["schedule"], int(p["seed"]))] for p in points]


def _stage_result(space: SpaceLike, folder: Path, storage_url: str) -> SearchResult:
    return SearchResult(
        name=f"{space.name} (confirmation)",
        space_file=str(getattr(space, "file", "")),
        results_dir=str(folder),
        metric=space.metric,
        mode=space.mode,
        study_storage=storage_url,
        study_name=space.name,
    )


def _tuner(
    trainable: Any, points: list[dict[str, Any]], folder: Path, live: LiveRun, concurrent: int
) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space={CONFIG_KEY: tune.grid_search(points)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent or None,
            trial_name_creator=_run_name,
            trial_dirname_creator=_run_name,
        ),
        run_config=tune.RunConfig(
            name=RAY_FOLDER,
            storage_path=str(folder),
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
            callbacks=[
                _MonitorCallback(str(folder), live),
                JsonLoggerCallback(),
                CSVLoggerCallback(),
            ],
        ),
    )


def _run_name(trial: Any) -> str:
    kd = trial.config.get(CONFIG_KEY, {})
    spec = str(kd.get("schedule", "")).replace(":", "-").replace(",", "_")
    return f"confirm_{spec}_seed{kd.get('seed')}_{trial.trial_id}"


def _prior(path: Path) -> SearchResult | None:
    try:
        return SearchResult.load(path) if path.is_file() else None
    except (ValueError, TypeError, KeyError):
        return None


def _add_to_study(storage_url: str, study_name: str, record: TrialRecord, metric: str) -> None:
    """The confirmation run as a finished trial of the search's study: no parameters (nothing
    sampled it), tagged ``stage=confirm``; a run already added (a resumed stage) is not added
    again."""
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    if any(
        t.user_attrs.get("ray_trial_id") == record.trial_id
        for t in study.get_trials(deepcopy=False)
    ):
        return
    value = record.value(metric) if record.state == COMPLETE else None
    steps = {
        int(h["epoch"]): float(h[metric])
        for h in record.history
        if "epoch" in h and isinstance(h.get(metric), float) and math.isfinite(h[metric])
    }
    now = time.time()
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE
            if value is not None
            else optuna.trial.TrialState.FAIL,
            value=value,
            intermediate_values=steps,
            user_attrs={
                STAGE_ATTR: CONFIRM_STAGE,
                "schedule": record.reported_schedule,
                "weighting": words(record.reported_schedule),
                "seed": int(record.config.get("seed", 0)),
                "round": record.round or 1,
                "ray_trial_id": record.trial_id,
                "wall_s": round(record.wall_s, 1),
                "finished_at": now,
            },
        )
    )
