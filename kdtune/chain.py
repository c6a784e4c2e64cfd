"""``level: chain``: teacher → med → tiny in one trial. The first level (med, weighted by
``schedule``) trains, then the second (tiny, ``schedule_second``) taught by that med. Only the
second level reports: its AP is the chain's objective. The trial function (``fit``,
:func:`kdtune.train.fit`) is handed in, so that this module sits below ``train``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from kdtune.config import TEACHER_INPUT_AUTO, TrainConfig

Report = Callable[[int, dict[str, float], Path], None]


class Fit(Protocol):
    """:func:`kdtune.train.fit`'s signature."""

    def __call__(
        self,
        config: TrainConfig,
        report: Report | None,
        *,
        workdir: Path,
        resume_from: Path | None = None,
        results: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, Any]: ...


def fit_chain(
    cfg: TrainConfig,
    report: Report | None,
    *,
    fit: Fit,
    workdir: Path,
    resume_from: Path | None,
    results: Path | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Both levels into ``workdir/first`` and ``workdir/second`` (a finished first level is
    read back, not trained again); ``resume_from`` is a second-level checkpoint."""
    first_dir = workdir / "first"
    first_summary = first_dir / "summary.json"
    if first_summary.is_file():
        first = json.loads(first_summary.read_text())
    else:
        first = fit(replace(cfg, level="first"), None, workdir=first_dir, results=results, log=log)
    # the med is fed what it was trained at (teacher_input_size named the first level's teacher)
    second_cfg = replace(
        cfg,
        level="second",
        schedule=cfg.schedule_second,
        teacher_checkpoint=first["model"],
        teacher_input_size=TEACHER_INPUT_AUTO,
    )
    first_ap = float(first["final"].get("val/ap", 0.0))

    def report_second(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
        if report is not None:
            report(epoch, {**metrics, "first/val/ap": first_ap}, ckpt)

    summary = fit(
        second_cfg,
        report_second,
        workdir=workdir / "second",
        resume_from=resume_from,
        results=results,
        log=log,
    )
    summary = {**summary, "level": "chain", "first": first}
    tmp = workdir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, workdir / "summary.json")
    return summary
