"""A toy trial function with the signature of ``kdtune.train.fit``, for the search tests.

It trains nothing: every epoch it sleeps briefly, and at each evaluation it writes a real
checkpoint folder and reports a validation-AP curve fixed by the trial's β schedule::

    ap(epoch) = quality(alpha) * (1 - exp(-epoch / 3)),  quality peaks at alpha = 0.3

``config["extra"]`` steers it: ``sleep`` (seconds per epoch), ``fail_alpha`` (a list of α
values whose trials raise), ``nan_alpha`` (α values whose loss "goes NaN", raising a
``kdtune.errors.TrialDiverged`` as ``kdtune.train`` does), ``fail_epoch`` (when they do).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdtune.errors import TrialDiverged


def alpha_of(config: dict[str, Any]) -> float:
    """The ground-truth weight of a fixed schedule ``fixed:<beta>``; 0.5 for adaptive ones."""
    shape, _, rest = str(config["schedule"]).partition(":")
    if shape != "fixed":
        return 0.5
    return round(1.0 - float(rest.split(",")[0]), 6)


def toy_ap(alpha: float, epoch: int) -> float:
    """The toy learning curve: better near alpha = 0.3, rising with epochs."""
    quality = max(0.05, 0.9 - 2.0 * (alpha - 0.3) ** 2)
    return quality * (1.0 - math.exp(-epoch / 3.0))


def toy_fit(
    config: dict[str, Any],
    report: Callable[[int, dict[str, float], Path], None],
    *,
    workdir: Path,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Pretend to train ``config["epochs"]`` epochs, reporting every ``eval_every``."""
    extra = config.get("extra") or {}
    alpha = alpha_of(config)
    epochs, every = int(config["epochs"]), int(config.get("eval_every", 1))
    start = 1
    if resume_from is not None:
        start = json.loads((Path(resume_from) / "state.json").read_text())["epoch"] + 1
    fail_epoch = int(extra.get("fail_epoch", 2))
    for epoch in range(start, epochs + 1):
        time.sleep(float(extra.get("sleep", 0.05)))
        if epoch == fail_epoch and alpha in extra.get("fail_alpha", []):
            raise ValueError(f"toy failure at epoch {epoch}")
        if epoch == fail_epoch and alpha in extra.get("nan_alpha", []):
            raise TrialDiverged(f"loss became nan at epoch {epoch}")
        if epoch % every and epoch != epochs:
            continue
        ap = toy_ap(alpha, epoch)
        ckpt = Path(workdir) / "checkpoints" / f"epoch_{epoch:04d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "state.json").write_text(json.dumps({"epoch": epoch, "alpha": alpha}))
        metrics = {"val/ap": ap, "train/loss": 1.0 - ap, "toy/start_epoch": float(start)}
        report(epoch, metrics, ckpt)
    return {"alpha": alpha, "epochs": epochs}


class ToyPopulation:
    """:func:`toy_fit`, and a toy population (``population``, as
    :meth:`kdtune.tune.trial.TrainFit.population`): its members report in lockstep at each
    evaluation, a member whose report raises ``MemberPruned`` leaves (the epoch at which it
    learned is written to ``left.txt`` in its folder) and the others go on."""

    def __call__(self, config: dict[str, Any], report: Any, **kwargs: Any) -> dict[str, Any]:
        return toy_fit(config, report, **kwargs)

    def population(
        self,
        configs: list[dict[str, Any]],
        reports: list[Callable[[int, dict[str, float], Path], None]],
        *,
        workdirs: list[Path],
        on_evaluated: Callable[[int], None],
    ) -> list[tuple[str, str]]:
        extra = configs[0].get("extra") or {}
        epochs, every = int(configs[0]["epochs"]), int(configs[0].get("eval_every", 1))
        ended = [("finished", "")] * len(configs)
        active = list(range(len(configs)))
        for epoch in range(1, epochs + 1):
            time.sleep(float(extra.get("sleep", 0.05)))
            if epoch % every and epoch != epochs:
                continue
            for m in list(active):
                ap = toy_ap(alpha_of(configs[m]), epoch)
                ckpt = Path(workdirs[m]) / "checkpoints" / f"epoch_{epoch:04d}"
                ckpt.mkdir(parents=True, exist_ok=True)
                (ckpt / "state.json").write_text(json.dumps({"epoch": epoch}))
                try:
                    reports[m](epoch, {"val/ap": ap, "train/loss": 1.0 - ap}, ckpt)
                except Exception as exc:  # MemberPruned (kdtune.population_fit: torch)
                    if type(exc).__name__ != "MemberPruned":
                        raise
                    (Path(workdirs[m]) / "left.txt").write_text(str(epoch))
                    active.remove(m)
                    ended[m] = ("pruned", str(exc))
            on_evaluated(epoch)
            if not active:
                break
        return ended
