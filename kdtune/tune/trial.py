"""The trial as Ray Tune runs it, in the trial worker: the trial function with a ``report``
that feeds Ray Tune, resumed from the trial's last checkpoint when Ray restarts it.

The trial function (:class:`TrainFit`: :func:`kdtune.train.fit` by default) knows nothing of
Ray: it takes the ``train`` part of the trial config and a ``report(epoch, metrics,
checkpoint_dir)`` callable. A :class:`~kdtune.errors.TrialDiverged` leaves the worker as a
:class:`~kdtune.tune.protocol.TrialDivergedError`, whose name the driver reads in the trial's
error text.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from kdtune.checks import is_number
from kdtune.errors import TrialDiverged
from kdtune.tune.protocol import CONFIG_KEY, NODE_KEY, TrialDivergedError, TrialFn


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


def ray_trainable(
    results: Path | None = None, trial_fn: TrialFn | None = None, cpu: float = 1, gpu: float = 0
) -> Any:
    """The Ray Tune trainable of kdtune's searches, for Ray's own tools on a search folder::

        tune.Tuner.restore("results/quickstart/ray", trainable=ray_trainable()).get_results()

    ``trial_fn`` defaults to kdtune's trial (:class:`TrainFit`) on ``results``."""
    from types import SimpleNamespace

    from kdtune.paths import results_dir

    fn = trial_fn or TrainFit(results_dir(results))
    return _trainable(fn, SimpleNamespace(cpu=cpu, gpu=gpu))


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
