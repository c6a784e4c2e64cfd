"""The trial as Ray Tune runs it, in the trial worker: the trial function with a ``report``
that feeds Ray Tune, resumed from the trial's last checkpoint when Ray restarts it.

The trial function (:class:`TrainFit`: :func:`kdtune.train.fit` by default) knows nothing of
Ray: it takes the ``train`` part of the trial config and a ``report(epoch, metrics,
checkpoint_dir)`` callable. A :class:`~kdtune.errors.TrialDiverged` leaves the worker as a
:class:`~kdtune.tune.protocol.TrialDivergedError`, whose name the driver reads in the trial's
error text.

A population trial (``confirm.population``, a trial config with
:data:`~kdtune.tune.protocol.MEMBERS_KEY`) trains its member runs as populations
(:meth:`TrainFit.population`) and reports every member's metrics of an evaluation as one Tune
result, under :func:`~kdtune.tune.protocol.member_key`, with one checkpoint that holds each
member's latest one in its :func:`~kdtune.tune.protocol.member_folder`; the driver turns them
into one record per member (:class:`kdtune.tune.records._PopulationMonitor`). It is not resumed
mid-run: a population trial that Ray restarts trains its members again from their start.

A search's population trial (``budget.population``) also names a file
(:data:`~kdtune.tune.protocol.PRUNED_FILE_KEY`) in which the driver lists the members its
pruner stopped; a member listed there leaves at its next evaluation (its report raises
:class:`kdtune.population_fit.MemberPruned`) and the others go on. The channel is a file: the
driver and the trial must see the same filesystem (one node, or a results folder shared by
every node), and a member goes on training until its next evaluation after the driver wrote it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from kdtune.checks import is_number
from kdtune.errors import KdtuneError, TrialDiverged
from kdtune.tune.protocol import (
    CONFIG_KEY,
    MEMBER_ERROR,
    MEMBERS_KEY,
    NODE_KEY,
    PRUNED_FILE_KEY,
    TrialDivergedError,
    TrialFn,
    member_folder,
    member_key,
)


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

    def population(
        self,
        configs: list[dict[str, Any]],
        reports: list[Callable[[int, dict[str, float], Path], None]],
        *,
        workdirs: list[Path],
        on_evaluated: Callable[[int], None],
    ) -> list[tuple[str, str]]:
        """Train the runs ``configs`` as populations
        (:func:`kdtune.population_fit.fit_populations`); each member's (state, reason)."""
        from kdtune.config import TrainConfig
        from kdtune.population_fit import fit_populations

        outcomes = fit_populations(
            [TrainConfig.from_dict(c) for c in configs],
            reports,
            workdirs=workdirs,
            results=self.results,
            on_evaluated=on_evaluated,
        )
        return [(out.state, out.reason) for out in outcomes]


def ray_trainable(
    results: Path | None = None,
    trial_fn: TrialFn | None = None,
    cpu: float = 1,
    gpu: float = 0,
    *,
    population: bool = False,
) -> Any:
    """The Ray Tune trainable of kdtune's searches, for Ray's own tools on a search folder::

        tune.Tuner.restore("results/quickstart/ray", trainable=ray_trainable()).get_results()

    ``trial_fn`` defaults to kdtune's trial (:class:`TrainFit`) on ``results``. ``population``:
    that of a confirmation round run with ``confirm.population`` other than 1, or of a search
    with ``budget.population`` other than 1 (Ray restores an experiment only with a trainable
    of the name it was run with)."""
    from types import SimpleNamespace

    from kdtune.paths import results_dir

    fn = trial_fn or TrainFit(results_dir(results))
    make = _population_trainable if population else _trainable
    return make(fn, SimpleNamespace(cpu=cpu, gpu=gpu))


def _trainable(trial_fn: TrialFn, resources: Any) -> Any:
    cpu, gpu = float(resources.cpu), float(resources.gpu)
    fn = tune.with_parameters(_run_trial, trial_fn=trial_fn, cpu=cpu)
    return tune.with_resources(fn, {"cpu": cpu, "gpu": gpu})


def _population_trainable(trial_fn: TrialFn, resources: Any) -> Any:
    """:func:`_trainable` for an experiment whose trials may be populations."""
    cpu, gpu = float(resources.cpu), float(resources.gpu)
    fn = tune.with_parameters(_run_population, trial_fn=trial_fn, cpu=cpu)
    return tune.with_resources(fn, {"cpu": cpu, "gpu": gpu})


def _run_trial(config: dict[str, Any], *, trial_fn: TrialFn, cpu: float) -> None:
    """One trial: the trial function with a ``report`` that feeds Ray Tune, resumed if asked."""
    _set_torch_threads(cpu)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    workdir = Path(tune.get_context().get_trial_dir()) / "work"

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        payload: dict[str, Any] = {k: float(v) for k, v in metrics.items() if is_number(v)}
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


def _run_population(config: dict[str, Any], *, trial_fn: TrialFn, cpu: float) -> None:
    """A population trial (see the module's docstring); a trial of one run is
    :func:`_run_trial`'s."""
    kd = config[CONFIG_KEY]
    if MEMBERS_KEY not in kd:
        return _run_trial(config, trial_fn=trial_fn, cpu=cpu)
    train = getattr(trial_fn, "population", None)
    if train is None:
        key = "budget.population" if PRUNED_FILE_KEY in kd else "confirm.population"
        raise KdtuneError(f"{key}: the trial function {trial_fn!r} has no population")
    _set_torch_threads(cpu)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    work = Path(tune.get_context().get_trial_dir()) / "work"
    members = [dict(point["train"]) for point in kd[MEMBERS_KEY]]
    workdirs = [work / member_folder(k) for k in range(len(members))]
    shutil.rmtree(work, ignore_errors=True)  # a restarted population trains again from its start
    metrics: dict[int, dict[str, float]] = {}
    latest: dict[int, Path] = {}  # each member's newest checkpoint

    pruned_file = kd.get(PRUNED_FILE_KEY)

    def report_of(k: int) -> Callable[[int, dict[str, float], Path], None]:
        def report(epoch: int, values: dict[str, float], checkpoint_dir: Path) -> None:
            if pruned_file and k in _pruned_members(Path(pruned_file)):
                from kdtune.population_fit import MemberPruned

                raise MemberPruned(f"pruned by the search's pruner (seen at epoch {epoch})")
            metrics[k] = {name: float(v) for name, v in values.items() if is_number(v)}
            latest[k] = Path(checkpoint_dir)

        return report

    def evaluated(epoch: int) -> None:
        payload: dict[str, Any] = {"epoch": int(epoch), NODE_KEY: node}
        for k, values in metrics.items():
            payload.update({member_key(k, name): v for name, v in values.items()})
        metrics.clear()
        staged = work / f".checkpoint_{epoch:04d}"
        shutil.rmtree(staged, ignore_errors=True)
        for k, ckpt in latest.items():
            shutil.copytree(ckpt, staged / member_folder(k))
        tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(staged)))
        shutil.rmtree(staged, ignore_errors=True)

    ended = train(
        members,
        [report_of(k) for k in range(len(members))],
        workdirs=workdirs,
        on_evaluated=evaluated,
    )
    gone = {
        member_key(k, MEMBER_ERROR): f"{TrialDivergedError.__name__}: {TrialDiverged.__name__}: "
        f"{reason}"
        for k, (state, reason) in enumerate(ended)
        if state == "diverged"
    }
    if gone:
        tune.report({**gone, NODE_KEY: node})


def _pruned_members(file: Path) -> set[int]:
    """The members of a search's population trial that the driver's pruner stopped (the
    file it writes, :func:`kdtune.tune.bridge.write_pruned`); none while there is no file."""
    try:
        return {int(k) for k in json.loads(file.read_text())}
    except (OSError, ValueError, TypeError):
        return set()


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
