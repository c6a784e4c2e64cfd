"""The search report: how a search's trials spread over the diagnoses, whether the best
trial agrees with the guidance, and which schedules the guidance would try next."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdtune.diagnose.guidance import (
    ADAPTIVE,
    DIRECTIONS,
    GUIDANCE,
    LABELS,
    MORE_DISTILLATION,
    distinct_specs,
    mean_beta,
)
from kdtune.diagnose.trial import Diagnosis
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE
from kdtune.schedules import parse_schedule


@dataclass
class TrialSummary:
    """What the search report needs from one trial."""

    trial_id: str
    schedule: str
    state: str
    best_ap: float | None
    diagnosis: Diagnosis | None = None


@dataclass
class SearchReport:
    """How the trials spread over the diagnoses, whether the best agrees with the guidance,
    and which schedules the guidance would try next (best trials' moves first)."""

    n_trials: int
    counts: dict[str, int]
    states: dict[str, int]
    best: TrialSummary | None
    direction: str | None
    agrees_with_guidance: bool | None
    explanation: str
    next_points: list[str]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["best"] = None if self.best is None else _summary_dict(self.best)
        return d

    def to_text(self) -> str:
        spread = ", ".join(f"{n} {label}" for label, n in self.counts.items() if n)
        lines = [f"{self.n_trials} trials: {spread or 'none diagnosed'}"]
        if self.best is not None:
            label = self.best.diagnosis.label if self.best.diagnosis else "not diagnosed"
            lines.append(
                f"best: trial {self.best.trial_id}, {self.best.schedule} "
                f"(mean β {mean_beta(self.best.schedule):.3g}), "
                f"val/ap {self.best.best_ap:.3f}, {label}"
            )
        else:
            lines.append("best: no completed trial with a validation AP")
        verdict = {True: "agrees", False: "disagrees", None: "no verdict"}[
            self.agrees_with_guidance
        ]
        lines.append(f"guidance: {verdict}: {self.explanation}")
        lines.append("next points: " + (", ".join(self.next_points) or "none"))
        return "\n".join(lines)


def _summary_dict(t: TrialSummary) -> dict[str, Any]:
    d = dataclasses.asdict(t)
    d["diagnosis"] = None if t.diagnosis is None else t.diagnosis.to_dict()
    return d


def search_report(trials: Sequence[TrialSummary], *, dominance: float = 0.5) -> SearchReport:
    """Summarise a search's diagnoses.

    A direction of the guidance (one of :data:`DIRECTIONS`; a trial counts toward its
    diagnosis's ``direction`` in :data:`GUIDANCE`) *dominates* when its trials make up at least
    ``dominance`` of the diagnosed trials and outnumber each other direction's. Then the best
    completed trial agrees if its mean β is above the median trial's (more distillation), below
    it (more ground truth), or its schedule starts with more distillation than it ends with
    (adaptive). ``next_points`` leaves out schedules the search already ran.
    """
    if not 0 < dominance <= 1:
        raise KdtuneError(f"dominance: must be in (0, 1], got {dominance!r}")
    # the guidance is read from complete trials only: a pruned or failed trial's curve is short
    labels = [t.diagnosis.label for t in trials if t.diagnosis is not None and t.state == COMPLETE]
    counts = {label: labels.count(label) for label in LABELS}
    states: dict[str, int] = {}
    for t in trials:
        states[t.state] = states.get(t.state, 0) + 1
    best = _best(trials)
    direction = _dominant(counts, len(labels), dominance)
    agrees, why = _agreement(direction, best, trials, counts)
    return SearchReport(
        n_trials=len(trials),
        counts=counts,
        states=states,
        best=best,
        direction=direction,
        agrees_with_guidance=agrees,
        explanation=why,
        next_points=_next_points(trials),
    )


def _ap(t: TrialSummary) -> float:
    ap = t.best_ap
    return ap if ap is not None and math.isfinite(ap) else -math.inf


def _best(trials: Sequence[TrialSummary]) -> TrialSummary | None:
    done = [t for t in trials if t.state == COMPLETE and _ap(t) > -math.inf]
    return max(done, key=_ap) if done else None


def _dominant(counts: dict[str, int], n: int, dominance: float) -> str | None:
    votes = dict.fromkeys(DIRECTIONS, 0)
    for kind in GUIDANCE:
        if kind.direction is not None:
            votes[kind.direction] += counts[kind.label]
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    top, n_top = ranked[0]
    if n == 0 or n_top < dominance * n or n_top == ranked[1][1]:
        return None
    return top


def _agreement(
    direction: str | None,
    best: TrialSummary | None,
    trials: Sequence[TrialSummary],
    counts: dict[str, int],
) -> tuple[bool | None, str]:
    if direction is None:
        return None, "no single direction of the guidance dominates the diagnoses"
    kinds = [kind for kind in GUIDANCE if kind.direction == direction]
    n = sum(counts[kind.label] for kind in kinds)
    symptom = " or ".join(kind.symptom for kind in kinds)
    head = f"{n} trials show {symptom}, so the guidance says {direction.replace('_', ' ')}"
    if best is None:
        return None, f"{head}; no completed trial to compare"
    sched = parse_schedule(best.schedule)
    if direction == ADAPTIVE:
        ok = sched.beta_start > sched.beta_end
        return (
            ok,
            f"{head}; the best trial's {sched.spec} "
            f"{'is' if ok else 'is not'} high-distillation-first",
        )
    beta = mean_beta(sched)
    median = statistics.median(mean_beta(t.schedule) for t in trials)
    ok = beta > median if direction == MORE_DISTILLATION else beta < median
    side = "above" if beta > median else "below" if beta < median else "at"
    return (
        ok,
        f"{head}; the best trial's mean β {beta:.3g} is {side} the median trial's {median:.3g}",
    )


def _next_points(trials: Sequence[TrialSummary]) -> list[str]:
    ranked = sorted(trials, key=_ap, reverse=True)
    moves = [s for t in ranked if t.diagnosis for s in t.diagnosis.next_schedules]
    return distinct_specs(moves, exclude=[t.schedule for t in trials])
