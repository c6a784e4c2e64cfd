"""The search report: how a search's trials spread over the diagnoses, whether the search's
answer (the confirmation's recommendation, else the single-seed best) goes the way the
guidance points, and which schedules the guidance would try next (around what the
confirmation supports, where there is one)."""

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
from kdtune.schedules import parse_schedule, words


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
    """How the trials spread over the diagnoses, whether the answer goes the guidance's way,
    and which schedules the guidance would try next (the answer's moves first). ``best`` is
    the single-seed best trial (a record for readers of ``to_dict``; the text never names it:
    the summary's answer is the one best); ``subject`` names what the guidance was checked
    against; ``next_from`` where the next points come from."""

    n_trials: int
    counts: dict[str, int]
    states: dict[str, int]
    best: TrialSummary | None
    direction: str | None
    agrees_with_guidance: bool | None
    explanation: str
    next_points: list[str]
    subject: str = "the single-seed best"
    next_from: str = "the trials' diagnoses, best first"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["best"] = None if self.best is None else _summary_dict(self.best)
        return d

    def to_text(self) -> str:
        spread = ", ".join(f"{n} {label}" for label, n in self.counts.items() if n)
        lines = [f"diagnoses of {self.n_trials} trials: {spread or 'none diagnosed'}"]
        way = {
            True: f"{self.subject} goes its way",
            False: f"{self.subject} goes against it",
            None: "no direction to check",
        }[self.agrees_with_guidance]
        lines.append(f"guidance: {way}: {self.explanation}")
        points = "; ".join(words(p) for p in self.next_points) or "none"
        lines.append(f"guidance's next points ({self.next_from}): {points}")
        return "\n".join(lines)


def _summary_dict(t: TrialSummary) -> dict[str, Any]:
    d = dataclasses.asdict(t)
    d["diagnosis"] = None if t.diagnosis is None else t.diagnosis.to_dict()
    return d


def search_report(
    trials: Sequence[TrialSummary],
    *,
    dominance: float = 0.5,
    supported: Sequence[str] | None = None,
    supported_runs: Sequence[TrialSummary] = (),
) -> SearchReport:
    """Summarise a search's diagnoses.

    A direction of the guidance (one of :data:`DIRECTIONS`; a trial counts toward its
    diagnosis's ``direction`` in :data:`GUIDANCE`) *dominates* when its trials make up at least
    ``dominance`` of the diagnosed trials and outnumber each other direction's. Then the answer
    goes the guidance's way if its mean β is above the median trial's (more distillation), below
    it (more ground truth), or its schedule starts with more distillation than it ends with
    (adaptive). The answer is ``supported[0]`` (the confirmation's recommendation; ``supported``
    also holds the weightings equivalent to it) where a confirmation gave one, else the
    single-seed best trial. ``next_points`` are the moves of the runs of ``supported`` (trials
    and ``supported_runs``, the confirmation's), else of every trial, best first; either way
    they leave out schedules the search already ran.
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
    if supported:
        subject_spec: str | None = supported[0]
        subject = f"the recommendation {words(supported[0])}"
        backed = {_normal(s) for s in supported}
        runs = [t for t in [*trials, *supported_runs] if _normal(t.schedule) in backed]
        points = _next_points(runs, exclude=[t.schedule for t in trials])
        next_from = "around the recommendation and its equivalents"
    else:
        subject_spec = best.schedule if best is not None else None
        subject = "the single-seed best" + (f" {words(best.schedule)}" if best else "")
        points = _next_points(trials, exclude=[t.schedule for t in trials])
        next_from = "the trials' diagnoses, best first; unconfirmed"
    agrees, why = _agreement(direction, subject_spec, subject, trials, counts)
    return SearchReport(
        n_trials=len(trials),
        counts=counts,
        states=states,
        best=best,
        direction=direction,
        agrees_with_guidance=agrees,
        explanation=why,
        next_points=points,
        subject=subject,
        next_from=next_from,
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
    spec: str | None,
    subject: str,
    trials: Sequence[TrialSummary],
    counts: dict[str, int],
) -> tuple[bool | None, str]:
    if direction is None:
        return None, "no single direction of the guidance dominates the diagnoses"
    kinds = [kind for kind in GUIDANCE if kind.direction == direction]
    n = sum(counts[kind.label] for kind in kinds)
    symptom = " or ".join(kind.symptom for kind in kinds)
    head = f"{n} trials show {symptom}, so the guidance says {direction.replace('_', ' ')}"
    if spec is None:
        return None, f"{head}; no completed trial to compare"
    sched = parse_schedule(spec)
    if direction == ADAPTIVE:
        ok = sched.beta_start > sched.beta_end
        return (
            ok,
            f"{head}; {subject} {'is' if ok else 'is not'} high-distillation-first",
        )
    beta = mean_beta(sched)
    median = statistics.median(mean_beta(t.schedule) for t in trials)
    ok = beta > median if direction == MORE_DISTILLATION else beta < median
    side = "above" if beta > median else "below" if beta < median else "at"
    return (
        ok,
        f"{head}; {subject}: mean β {beta:.3g} is {side} the median trial's {median:.3g}",
    )


def _next_points(trials: Sequence[TrialSummary], exclude: Sequence[str]) -> list[str]:
    ranked = sorted(trials, key=_ap, reverse=True)
    moves = [s for t in ranked if t.diagnosis for s in t.diagnosis.next_schedules]
    return distinct_specs(moves, exclude=list(exclude))


def _normal(spec: str) -> str:
    try:
        return parse_schedule(spec).spec
    except KdtuneError:
        return spec
