"""Plain records of a search and its trials, shared by ``tune`` (which fills them) and
``tracking`` / ``compare`` / ``export`` (which read them). No framework imports here.

A search writes ``<results>/<name>/search.json`` with :meth:`SearchResult.save`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdtune.checks import is_finite

# The files of a search under <results>/<name>/, one name each.
SEARCH_FILE = "search.json"  # the SearchResult: every trial and its curves
STUDY_FILE = "optuna.db"  # the Optuna study (SQLite)
SPACE_COPY = "space.yaml"  # the space file the search started with (checked on resume)
RAY_FOLDER = "ray"  # the Ray Tune experiment: trial folders and checkpoints
NEXT_POINTS_FILE = "next_points.yaml"  # the guidance's next points as a ready grid search
CONFIRM_FOLDER = "confirm"  # the confirmation stage: its own Tune experiment and records

# A trial's stage: sampled by the search, or a confirmation run of a chosen configuration.
SEARCH_STAGE, CONFIRM_STAGE = "search", "confirm"

# The one metric vocabulary: what a trial reports at each evaluation, and the names Ray,
# Optuna, MLflow, compare and a space's `metric:` use. A search may optimise any of them
# (losses are minimised, the rest maximised).
METRICS: tuple[str, ...] = (
    "val/ap",
    "val/ap50",
    "val/ap75",
    "val/apm",
    "val/apl",
    "val/ar",
    "val/loss",
    "train/loss",
    "train/student_loss",
    "train/distill_loss",
    "perf/images_per_s",
)
# Reported beside them, never optimised.
REPORTED: tuple[str, ...] = ("epoch", "train/beta", "train/lr")

# Trial states, one vocabulary for the summary table, MLflow tags and compare.
COMPLETE, PRUNED, FAILED, RUNNING = "complete", "pruned", "failed", "running"
STATES: tuple[str, ...] = (COMPLETE, PRUNED, FAILED, RUNNING)


@dataclass
class TrialRecord:
    trial_id: str  # Ray's trial id
    state: str  # one of STATES
    config: dict[str, Any]  # the full TrainConfig dict the trial ran with
    params: dict[str, Any] = field(default_factory=dict)  # what the sampler chose
    number: int | None = None  # the Optuna trial number
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per evaluation
    error: str | None = None
    diverged: bool = False
    checkpoint_dir: str | None = None  # the last checkpoint (holds the trial's artifacts)
    wall_s: float = 0.0
    node: str | None = None  # the host the trial ran on
    stage: str = SEARCH_STAGE  # SEARCH_STAGE or CONFIRM_STAGE
    round: int | None = None  # a confirmation run's racing round (1, 2, ...)
    # the Optuna number of the earlier trial of the same configuration (weighting and seed)
    # whose run answered this one: not trained again (the same run, to the last digit)
    repeat_of: int | None = None

    def value(self, metric: str = "val/ap") -> float | None:
        """The trial's value: ``metric`` at its final evaluation (the last finite one).

        One definition everywhere: the Optuna study, ``search.json``, MLflow's
        ``final/val/ap``, compare, export and the reproduction by ``kdtune train --config``,
        which trains all the epochs and so reproduces the final model, not a best epoch.
        """
        values = [h[metric] for h in self.history if is_finite(h.get(metric))]
        return values[-1] if values else None

    @property
    def reported_schedule(self) -> str:
        """The β schedule whose student reports this trial's metrics: a chain reports its
        second level."""
        key = "schedule_second" if self.config.get("level") == "chain" else "schedule"
        return str(self.config.get(key, "fixed:0.75"))

    @property
    def epochs_run(self) -> int:
        return int(max((h.get("epoch", 0) for h in self.history), default=0))


@dataclass
class SearchResult:
    name: str
    space_file: str
    results_dir: str
    metric: str = "val/ap"
    mode: str = "max"
    trials: list[TrialRecord] = field(default_factory=list)
    wall_s: float = 0.0
    study_storage: str | None = None
    study_name: str | None = None
    confirmations: list[TrialRecord] = field(default_factory=list)  # the confirmation runs
    verdict: dict[str, Any] | None = None  # kdtune.verdict.confirm_verdict's record
    rounds: list[dict[str, Any]] = field(default_factory=list)  # the confirmation's racing rounds
    teacher_val_ap: float | None = None  # the level's teacher on the validation split
    search_id: str = ""  # this search, apart from earlier ones of the same name (MLflow tag)

    @property
    def best(self) -> TrialRecord | None:
        scored = [
            t for t in self.trials if t.state == COMPLETE and t.value(self.metric) is not None
        ]
        if not scored:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(scored, key=lambda t: sign * (t.value(self.metric) or 0.0))

    @property
    def recommended(self) -> str | None:
        """The recommended β schedule: the confirmation's best mean where there is one, else
        the search's best trial's (unconfirmed); None where there is none or it is
        :attr:`withheld`."""
        if self.withheld is not None:
            return None
        if self.verdict is not None:
            return str(self.verdict["recommended"])
        return self.best.reported_schedule if self.best is not None else None

    @property
    def withheld(self) -> str | None:
        """Why this search can recommend nothing, or None: a teacher no better than its best
        student cannot say how much a student should learn from it."""
        if self.teacher_val_ap is None:
            return None
        if self.verdict is not None:
            # the question: does the teacher beat the student trained without it (α = 1)?
            gt = self.verdict.get("ground_truth")
            alone = [r for r in self.verdict["ranking"] if gt and r["schedule"] == gt]
            if alone:
                student = float(alone[0]["mean"])
                if self.teacher_val_ap > student:
                    return None
                return (
                    f"the teacher (val AP {self.teacher_val_ap:.3f}) is no better than the "
                    f"student trained on ground truth alone (α 1 / β 0, confirmed mean "
                    f"{student:.3f}), so this search cannot say how much a student should "
                    "learn from it"
                )
            student = float(self.verdict["ranking"][0]["mean"])
        elif self.best is not None and self.metric == "val/ap":
            student = self.best.value(self.metric) or 0.0
        else:
            return None
        if self.teacher_val_ap > student:
            return None
        return (
            f"the teacher (val AP {self.teacher_val_ap:.3f}) is no better than the best student "
            f"({student:.3f}), so this search cannot say how much a student should learn from it"
        )

    def counts(self) -> dict[str, int]:
        return {s: sum(t.state == s for t in self.trials) for s in STATES}

    def epochs_spent(self) -> int:
        """The epochs the search trained (a repeat answered from an earlier trial trained
        none)."""
        return sum(t.epochs_run for t in self.trials if t.repeat_of is None)

    def save(self, path: Path) -> None:
        """Write atomically, so that a killed search never leaves a half-written file.

        Paths inside the file's folder are stored relative to it (``load`` resolves them),
        so a results folder moved elsewhere still reads, and resumes, from its new place.
        """
        raw = asdict(self)
        _rebase(raw, Path(path).resolve().parent, relative=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(raw, indent=2, default=str))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SearchResult:
        raw = json.loads(Path(path).read_text())
        _rebase(raw, Path(path).resolve().parent, relative=False)
        trials = [TrialRecord(**t) for t in raw.pop("trials", [])]
        confirmations = [TrialRecord(**t) for t in raw.pop("confirmations", [])]
        return cls(**raw, trials=trials, confirmations=confirmations)


_SQLITE = "sqlite:///"


def _rebase(raw: dict[str, Any], folder: Path, *, relative: bool) -> None:
    """A search's stored paths (its folder, its study's SQLite file, its trials' checkpoints)
    made relative to ``folder`` (``relative``), or absolute again from it."""

    def move(text: str | None) -> str | None:
        if not text:
            return text
        if relative:
            path = Path(text)
            return os.path.relpath(path, folder) if path.is_relative_to(folder) else text
        return text if Path(text).is_absolute() else str(folder / text)

    raw["results_dir"] = move(raw.get("results_dir"))
    storage = raw.get("study_storage")
    if isinstance(storage, str) and storage.startswith(_SQLITE):
        raw["study_storage"] = _SQLITE + str(move(storage[len(_SQLITE) :]))
    for trial in [*raw.get("trials", []), *raw.get("confirmations", [])]:
        trial["checkpoint_dir"] = move(trial.get("checkpoint_dir"))
