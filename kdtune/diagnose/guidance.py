"""The tuning guidance as a table of diagnosis records, and the β schedules it tries next.

The guidance (DESIGN.md §1) maps a symptom in the curves to a move of the ratio α/β
(α = ground-truth weight, β = distillation weight, α + β = 1):

=================  ============================================  ===================================
label              what it looks like                            next β schedules
=================  ============================================  ===================================
diverged           a loss is NaN/inf, or rose ×10 over its        none: lower the learning rate
                   earlier minimum
failed             the trial raised an error and stopped         none: fix the error and rerun
pruned             the pruner stopped the trial early            none: judged by the pruner
overfitting        low training loss, and validation loss        more distillation:
                   rising from its minimum or far above train    α − 0.05, α − 0.10
                                                                 (0.25/0.75 → 0.2/0.8, 0.15/0.85)
underfitting       high training loss and poor AP                more ground truth:
                                                                 α + 0.05, α + 0.15
                                                                 (0.25/0.75 → 0.3/0.7, 0.4/0.6)
slow_convergence   training loss still falling steeply at the    high distillation early:
                   last evaluation                               ``linear:0.9:β``, ``cosine:0.9:β``
plateau            AP flat over the last evaluations             ``linear:0.9:0.5``,
                                                                 ``cosine:0.9:0.5``
healthy            none of the above (or too few evaluations)    none
=================  ============================================  ===================================

The first label whose test passes, in that order, wins: a diverged run's other curves mean
nothing; a failed trial stopped on an error, so its curves end wherever the error struck and
say nothing of the weighting; a pruned trial's curves are too short to read a symptom from;
overfitting is tested before underfitting because its "low training loss" excludes
underfitting's "high training loss" anyway, and a named symptom outranks the milder slow
convergence and plateau. "healthy" means no symptom was found, not that the trial is good.

In code the table is :data:`GUIDANCE`: one :class:`DiagnosisKind` per row, in that order, with
the row's test, recommendation, moves and the direction the search report counts it toward.
A new diagnosis is one more row there, with its test function beside the others.

For an adaptive schedule the "current" α is 1 − (the schedule's mean β over training). Next
ratios are clamped to [0, 1], rounded to 0.05, deduplicated, and never the current schedule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdtune.diagnose.measures import Measures
from kdtune.diagnose.thresholds import Thresholds
from kdtune.errors import KdtuneError
from kdtune.results import FAILED, PRUNED
from kdtune.schedules import BetaSchedule, parse_schedule

# The guidance's moves, in α (ground-truth weight).
UNDERFIT_ALPHA_MOVES: tuple[float, ...] = (0.05, 0.15)
OVERFIT_ALPHA_MOVES: tuple[float, ...] = (-0.05, -0.10)
EARLY_BETA = 0.9  # "start with distillation weight 0.9"
PLATEAU_SCHEDULES: tuple[str, ...] = ("linear:0.9:0.5", "cosine:0.9:0.5")
GRID = 0.05  # next ratios are rounded to this step

# Which way a diagnosis's moves push the search, and when the best trial agrees with it.
MORE_DISTILLATION = "more_distillation"  # its mean β is above the median trial's
MORE_GROUND_TRUTH = "more_ground_truth"  # its mean β is below the median trial's
ADAPTIVE = "adaptive"  # its schedule starts with more distillation than it ends with
DIRECTIONS: tuple[str, ...] = (MORE_DISTILLATION, MORE_GROUND_TRUTH, ADAPTIVE)


# ---------------------------------------------------------------------------- the guidance table

# A row's test: the curves' measures, the thresholds and the search's best AP (None when
# unknown) → why the label applies, citing numbers, or None when it does not.
Test = Callable[[Measures, Thresholds, float | None], str | None]
# A row's moves: the trial's current α → the β schedule specs to try next.
Moves = Callable[[float], list[str]]


@dataclass(frozen=True)
class DiagnosisKind:
    """One row of the guidance table: a label and everything the guidance says about it.

    - ``label``: the name a :class:`Diagnosis` carries.
    - ``test``: what it looks like (see :data:`Test`).
    - ``recommendation``: what to do, in words; ``{ratio}`` stands for the trial's α/β.
    - ``moves``: the next β schedules from the trial's current α, before they are clamped,
      rounded and deduplicated; None where the guidance has no ratio move.
    - ``direction``: which of :data:`DIRECTIONS` the moves push the search, the one the
      search report counts the label toward; None exactly when ``moves`` is None.
    - ``symptom``: the label in the search report's words.

    A row that misses one of them fails here, when the module is imported.
    """

    label: str
    test: Test
    recommendation: str
    moves: Moves | None
    direction: str | None
    symptom: str

    def __post_init__(self) -> None:
        where = f"diagnosis {self.label!r}"
        if not self.label.isidentifier() or self.label != self.label.lower():
            raise ValueError(f"{where}: the label must be a lower_case name")
        if not self.recommendation or not self.symptom:
            raise ValueError(f"{where}: needs a recommendation and a symptom")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"{where}: direction {self.direction!r} is none of {DIRECTIONS}")
        if (self.moves is None) != (self.direction is None):
            raise ValueError(f"{where}: moves and a direction go together (both or neither)")
        try:
            self.recommendation.format(ratio="")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"{where}: the recommendation's only placeholder is {{ratio}}"
            ) from None

    def recommend(self, sched: BetaSchedule) -> str:
        """The recommendation for a trial run at ``sched``."""
        return self.recommendation.format(ratio=_ratio(sched))


def _test_diverged(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    return m.nonfinite or m.explosion


def _test_failed(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.state != FAILED:
        return None
    at = " before its first evaluation"
    if m.last_epoch is not None:
        at = f" at epoch {m.last_epoch:g}"
    return f"the trial failed{at}: its curves stop on an error, not on anything the weighting did"


def _test_pruned(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.state != PRUNED:
        return None
    at = f" at epoch {m.last_epoch:g}" if m.last_epoch is not None else ""
    return f"the pruner stopped it{at}: its curves are too short to read the guidance from"


def _loss_is_low(m: Measures, th: Thresholds) -> bool:
    return m.loss_ratio is not None and m.loss_ratio <= th.underfit_loss_ratio


def _test_overfitting(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if not _loss_is_low(m, th):
        return None
    low = (
        f"{m.trend_key} fell to {m.loss_ratio:.0%} of its start "
        f"({m.loss_first:.4g} → {m.loss_last:.4g})"
    )
    rising = m.val_rise is not None and m.val_rise > th.overfit_rise and m.train_fell_after_val_min
    if rising:
        return (
            f"{low}, while val/loss rose {m.val_rise:.0%} from its minimum {m.val_min:.4g} "
            f"({m.val_min_epoch}) to {m.val_last:.4g} (threshold {th.overfit_rise:.0%})"
        )
    if m.gap is not None and m.gap > th.overfit_gap:
        return (
            f"{low}, and val/loss {m.gap_val:.4g} is {m.gap:.0%} above {m.gap_key} "
            f"{m.gap_train:.4g} at the last evaluation (threshold {th.overfit_gap:.0%})"
        )
    return None


def _test_underfitting(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.loss_ratio is None or m.loss_ratio <= th.underfit_loss_ratio:
        return None
    high = (
        f"{m.trend_key} still {m.loss_ratio:.0%} of its start "
        f"({m.loss_first:.4g} → {m.loss_last:.4g}; "
        f"high: above {th.underfit_loss_ratio:.0%})"
    )
    if m.ap_best is None:
        return f"{high}; no val/ap reported"
    if ap_ref is not None:
        if m.ap_best < th.underfit_ap * ap_ref:
            return (
                f"{high}, and best val/ap {m.ap_best:.3f} < "
                f"{th.underfit_ap:g} × the search's best {ap_ref:.3f}"
            )
        return None
    if m.ap_best < th.underfit_ap_abs:
        return f"{high}, and best val/ap {m.ap_best:.3f} < {th.underfit_ap_abs:g}"
    return None


def _test_slow(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.slope is None or m.slope <= th.slow_slope:
        return None
    return (
        f"{m.trend_key} still falling {m.slope:.1%} per evaluation over the last "
        f"{m.slope_window} evaluations (threshold {th.slow_slope:.1%}), down to {m.loss_last:.4g}"
    )


def _test_plateau(m: Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.ap_range is None or m.ap_range >= th.plateau_delta:
        return None
    return (
        f"val/ap flat over the last {th.plateau_evals} evaluations: {m.ap_lo:.3f}–{m.ap_hi:.3f}, "
        f"range {m.ap_range:.4f} < {th.plateau_delta:g}"
    )


def _test_healthy(m: Measures, th: Thresholds, ap_ref: float | None) -> str:
    """Always passes: the table's last row."""
    if m.loss_ratio is None and m.ap_best is None:
        return f"too few evaluations to judge ({m.n}); no symptom found"
    parts = []
    if m.loss_ratio is not None:
        parts.append(f"{m.trend_key} at {m.loss_ratio:.0%} of its start, not falling steeply")
    if m.ap_best is not None:
        parts.append(f"best val/ap {m.ap_best:.3f}")
    return "no symptom: " + ", ".join(parts)


def _alpha_moves(deltas: tuple[float, ...]) -> Moves:
    """Fixed ratios at the current α plus each of ``deltas``."""

    def moves(alpha: float) -> list[str]:
        return [_fixed(alpha + d) for d in deltas]

    return moves


def _early_distillation(alpha: float) -> list[str]:
    """β from EARLY_BETA (or 0.1 above the current β) down to the current β."""
    end = _snap(1.0 - alpha)
    start = max(EARLY_BETA, _snap(end + 0.1))
    if start <= end:
        return []
    return [parse_schedule(f"{shape}:{start:g}:{end:g}").spec for shape in ("linear", "cosine")]


def _schedules(specs: tuple[str, ...]) -> Moves:
    """The same schedules whatever the current α."""
    return lambda alpha: list(specs)


# The guidance table, in priority order: the first row whose test passes wins; the last row,
# healthy, always passes.
GUIDANCE: tuple[DiagnosisKind, ...] = (
    DiagnosisKind(
        label="diverged",
        test=_test_diverged,
        recommendation=(
            "lower the learning rate (÷3) or add warm-up/gradient clipping and rerun this "
            "weighting; the guidance has no ratio move for a diverged run"
        ),
        moves=None,
        direction=None,
        symptom="divergence",
    ),
    DiagnosisKind(
        label="failed",
        test=_test_failed,
        recommendation=(
            "none: fix what made it fail (its error is logged with the trial) and rerun this "
            "weighting; the guidance has no ratio move for a failed run"
        ),
        moves=None,
        direction=None,
        symptom="failure",
    ),
    DiagnosisKind(
        label="pruned",
        test=_test_pruned,
        recommendation="none: the pruner judged it against the other trials at that epoch",
        moves=None,
        direction=None,
        symptom="pruning",
    ),
    DiagnosisKind(
        label="overfitting",
        test=_test_overfitting,
        recommendation="raise the distillation weight from {ratio}",
        moves=_alpha_moves(OVERFIT_ALPHA_MOVES),
        direction=MORE_DISTILLATION,
        symptom="overfitting",
    ),
    DiagnosisKind(
        label="underfitting",
        test=_test_underfitting,
        recommendation="raise the student (ground-truth) weight from {ratio}",
        moves=_alpha_moves(UNDERFIT_ALPHA_MOVES),
        direction=MORE_GROUND_TRUTH,
        symptom="underfitting",
    ),
    DiagnosisKind(
        label="slow_convergence",
        test=_test_slow,
        recommendation=(
            "more distillation early (adaptive β from 0.9 to the current β) with a "
            "learning-rate schedule, or a longer budget"
        ),
        moves=_early_distillation,
        direction=ADAPTIVE,
        symptom="slow convergence",
    ),
    DiagnosisKind(
        label="plateau",
        test=_test_plateau,
        recommendation=(
            "an adaptive ratio: start with high distillation (β 0.9), end balanced (β 0.5)"
        ),
        moves=_schedules(PLATEAU_SCHEDULES),
        direction=ADAPTIVE,
        symptom="plateau",
    ),
    DiagnosisKind(
        label="healthy",
        test=_test_healthy,
        recommendation="no move indicated by the guidance",
        moves=None,
        direction=None,
        symptom="no symptom",
    ),
)


def _labels(kinds: Sequence[DiagnosisKind]) -> tuple[str, ...]:
    labels = tuple(kind.label for kind in kinds)
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(f"diagnosis {label!r} is in the guidance table twice")
    return labels


# Labels in priority order: the first whose test passes wins.
LABELS: tuple[str, ...] = _labels(GUIDANCE)
_BY_LABEL: dict[str, DiagnosisKind] = {kind.label: kind for kind in GUIDANCE}


def classify(m: Measures, th: Thresholds, ap_ref: float | None) -> tuple[DiagnosisKind, str]:
    """The first row of the table whose test passes, and its reason."""
    for kind in GUIDANCE:
        reason = kind.test(m, th, ap_ref)
        if reason:
            return kind, reason
    raise AssertionError("the guidance table's last row must always pass")


# ---------------------------------------------------------------------------- next ratios


def mean_beta(schedule: str | BetaSchedule) -> float:
    """The schedule's β averaged over training progress (midpoint rule, 2000 steps)."""
    sched = parse_schedule(schedule) if isinstance(schedule, str) else schedule
    return sched.beta_start if sched.shape == "fixed" else _mean_beta(sched)


@functools.lru_cache(maxsize=256)
def _mean_beta(sched: BetaSchedule, steps: int = 2000) -> float:
    total = math.fsum(sched((k + 0.5) / steps) for k in range(steps))
    return round(total / steps, 6)


def next_schedules(label: str, schedule: str | BetaSchedule) -> list[str]:
    """The β schedule specs the guidance tries after ``label`` at ``schedule`` (may be empty)."""
    if label not in LABELS:
        raise KdtuneError(f"label: unknown diagnosis {label!r} (choose from {', '.join(LABELS)})")
    sched = parse_schedule(schedule) if isinstance(schedule, str) else schedule
    moves = _BY_LABEL[label].moves
    if moves is None:
        return []
    alpha = 1.0 - mean_beta(sched)
    return distinct_specs(moves(alpha), exclude=sched.spec)


def _snap(x: float) -> float:
    """Clamp to [0, 1] and round to the grid."""
    return round(round(min(max(x, 0.0), 1.0) / GRID) * GRID, 4)


def _fixed(alpha: float) -> str:
    return parse_schedule(f"fixed:{_snap(1.0 - _snap(alpha)):g}").spec


def distinct_specs(specs: Sequence[str], exclude: str | Sequence[str] = ()) -> list[str]:
    """``specs`` normalised, in order, without repeats or any of ``exclude``."""
    excluded = [exclude] if isinstance(exclude, str) else list(exclude)
    seen = {_normal(s) for s in excluded}
    out = []
    for spec in specs:
        norm = _normal(spec)
        if norm not in seen:
            seen.add(norm)
            out.append(norm)
    return out


def _normal(spec: str) -> str:
    return parse_schedule(spec).spec


def _ratio(sched: BetaSchedule) -> str:
    beta = mean_beta(sched)
    where = "" if sched.shape == "fixed" else f"mean of {sched.spec}, "
    return f"α/β {1 - beta:.3g}/{beta:.3g} ({where}α = ground-truth weight)"
