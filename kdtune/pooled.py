"""The pooled model: every full-budget run of a search at once, search trials and confirmation
runs together, as evidence on how validation AP depends on the weighting.

One run says little: a run's AP moves by about 0.01 from seed to seed, as much as distillation
moves it. But the runs of one search are not unrelated: they share their training seeds (every
search trial trains on the search's seed, every confirmation round on its own), and AP changes
smoothly with how much the student learns from the teacher. So the model is

    AP(run) = b1 · β̄ + b2 · β̄² + seed effect of the run's seed

fitted by least squares over every run that finished the full budget, where β̄ is the mean of β
over training (a fixed ratio: its β). An adaptive schedule counts by its β̄ alone: which way it
moves is not a term. A direction term (β_end − β_start) was tried and dropped: the search's
adaptive schedules all run on its one seed, so the term was fitted from single-seed noise, and
in two of the judged quickstarts it made the model favour rising schedules, which the known
answer says are worse (docs/known-answer.md); the race still trains the candidate itself.

The weighting part is zero at α = 1 (β ≡ 0), so a weighting's prediction, ``gain``, is its AP
over ground truth alone; its standard error comes from the fit's covariance, the seed
effects estimated beside it (so seed-to-seed shifts, which every configuration of a seed shares,
drop out, as in a paired comparison). The quadratic term lets the best β lie inside the range
as well as at either end.

Who uses it: the confirmation picks its candidates by the model over the search's trials (the
weighting the whole search favours, not the one lucky trial), and where the race cannot tell
its leaders apart, the recommendation among them is the one the model over all runs, race
included, predicts best; where the model passes its lack-of-fit test (:attr:`Fit.fits`: an F
test against one mean per weighting), the verdict block also claims "equivalent by the pooled
model" from its differences (:func:`kdtune.verdict.verdict_block`'s ``model``). The model applies
only where the runs differ in nothing but weighting and seed (:func:`differs_beyond`); otherwise
the callers keep to single-seed values and race means. ``benchmarks/recommend_rule.py``
measures what it does to the regret against the known answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from kdtune.inference import f_sf
from kdtune.schedules import parse_schedule

MODEL = "AP ~ β̄ + β̄² + seed"
WEIGHTING_TERMS = 2
EXTRA_RUNS = 2  # runs beyond the model's parameters before a fit is trusted
_GRID = 257  # points of training progress β is averaged over
IGNORED = frozenset({"schedule", "seed", "eval_every", "round"})
LACK_OF_FIT = 0.05  # below this p, the runs contradict the model's shape: no claim rests on it


@dataclass(frozen=True)
class Run:
    """One full-budget run: its weighting (a schedule spec), training seed and final AP."""

    schedule: str
    seed: int
    ap: float


@cache
def features(spec: str) -> tuple[float, float]:
    """The weighting's terms of the model: β̄ (the mean of β over training progress), β̄²."""
    sched = parse_schedule(spec)
    grid = np.linspace(0.0, 1.0, _GRID)
    mean = float(np.mean([sched(p) for p in grid]))
    return (mean, mean * mean)


@dataclass(frozen=True)
class Fit:
    """A fitted pooled model: the weighting coefficients, their covariance, the residual sd,
    and what it was fitted on."""

    coef: np.ndarray  # the weighting terms' coefficients (the seed effects are not kept)
    cov: np.ndarray  # their covariance
    residual_sd: float
    runs: int
    seeds: int
    weightings: int
    dof: int
    model: str = MODEL
    lack_of_fit: float | None = None  # p of the lack-of-fit F test; None: nothing to test

    @property
    def fits(self) -> bool:
        """Whether the runs do not contradict the model's shape: its lack-of-fit test (against
        one mean per weighting, same seed effects) does not reject at :data:`LACK_OF_FIT`, or
        cannot be made (no weighting trained on two seeds, or no more weightings than terms)."""
        return self.lack_of_fit is None or self.lack_of_fit >= LACK_OF_FIT

    def gain(self, spec: str) -> float:
        """The predicted AP of ``spec`` over α = 1 (ground truth alone), same seed."""
        return float(np.dot(features(spec), self.coef))

    def gain_se(self, spec: str) -> float:
        x = np.asarray(features(spec))
        return float(np.sqrt(max(float(x @ self.cov @ x), 0.0)))

    def difference(self, a: str, b: str) -> tuple[float, float]:
        """The predicted AP of ``a`` minus that of ``b``, and its standard error."""
        x = np.asarray(features(a)) - np.asarray(features(b))
        return float(x @ self.coef), float(np.sqrt(max(float(x @ self.cov @ x), 0.0)))

    def best(self, specs: Iterable[str]) -> str:
        """The weighting of ``specs`` the model predicts highest (the first of a tie)."""
        return max(specs, key=self.gain)

    def ranked(self, specs: Iterable[str]) -> list[str]:
        """``specs``, best predicted first (ties in the given order)."""
        return sorted(specs, key=lambda s: -self.gain(s))

    def record(self, specs: Sequence[str]) -> dict[str, Any]:
        """The fit as plain values for ``search.json``: the model, its size, and each of
        ``specs`` with its predicted gain over α = 1 and that gain's standard error."""
        return {
            "model": self.model,
            "runs": self.runs,
            "seeds": self.seeds,
            "weightings": self.weightings,
            "residual_sd": self.residual_sd,
            "lack_of_fit": self.lack_of_fit,
            "gain": {s: {"mean": self.gain(s), "se": self.gain_se(s)} for s in specs},
        }


def fit(runs: Sequence[Run]) -> Fit | None:
    """The pooled model of ``runs``, or None where it cannot be trusted: fewer runs than its
    parameters plus :data:`EXTRA_RUNS`, fewer than three distinct weightings, or a design whose
    weighting terms are not all identified besides the seed effects. A weighting trained twice
    on one seed (a sampler that proposes a point again) is one run: the same run, the same AP,
    and counting it twice would understate the noise."""
    runs = list({(r.schedule, r.seed): r for r in runs if np.isfinite(r.ap)}.values())
    weightings = sorted({r.schedule for r in runs})
    seeds = sorted({r.seed for r in runs})
    params = WEIGHTING_TERMS + len(seeds)
    if len(weightings) < 3 or len(runs) < params + EXTRA_RUNS:
        return None
    column = {s: i for i, s in enumerate(seeds)}
    x = np.zeros((len(runs), params))
    for i, r in enumerate(runs):
        x[i, :WEIGHTING_TERMS] = features(r.schedule)
        x[i, WEIGHTING_TERMS + column[r.seed]] = 1.0
    y = np.array([r.ap for r in runs])
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < params:
        return None  # β̄ or β̄² not identified: the runs cannot say how AP depends on β
    dof = len(runs) - params
    if dof < 1:
        return None
    residual = y - x @ coef
    sigma2 = float(residual @ residual) / dof
    cov = sigma2 * np.linalg.inv(x.T @ x)
    lof = _lack_of_fit(runs, weightings, column, float(residual @ residual), dof)
    return Fit(
        coef=coef[:WEIGHTING_TERMS],
        cov=cov[:WEIGHTING_TERMS, :WEIGHTING_TERMS],
        residual_sd=float(np.sqrt(sigma2)),
        runs=len(runs),
        seeds=len(seeds),
        weightings=len(weightings),
        dof=dof,
        lack_of_fit=lof,
    )


def _lack_of_fit(
    runs: Sequence[Run], weightings: Sequence[str], column: Mapping[int, int], rss: float, dof: int
) -> float | None:
    """The p-value of the lack-of-fit F test: the model against the same runs fitted with one
    mean per weighting (and the same seed effects), which assumes nothing of how AP depends on
    β̄. None where the test cannot be made: the saturated fit leaves no residual (no weighting
    trained on two seeds) or the model has as many weighting terms as it has weightings."""
    row = {w: i for i, w in enumerate(weightings)}
    x = np.zeros((len(runs), len(weightings) + len(column)))
    for i, r in enumerate(runs):
        x[i, row[r.schedule]] = 1.0
        x[i, len(weightings) + column[r.seed]] = 1.0
    y = np.array([r.ap for r in runs])
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    rss_free, dof_free = float(residual @ residual), len(runs) - int(rank)
    extra = dof - dof_free
    if dof_free < 1 or extra < 1:
        return None
    if rss_free <= 0:
        return 0.0 if rss > 0 else 1.0
    return f_sf(((rss - rss_free) / extra) / (rss_free / dof_free), extra, dof_free)


def differs_beyond(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The settings other than weighting and seed in which ``configs`` differ (a searched lr,
    batch size…): the model applies only where this is empty."""
    configs = list(configs)
    keys = sorted({k for c in configs for k in c} - IGNORED)
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
