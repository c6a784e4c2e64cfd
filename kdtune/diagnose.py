"""Diagnose a trial from its curves, and say which weighting the tuning guidance would try next.

The guidance (DESIGN.md §1) maps a symptom in the curves to a move of the ratio α/β
(α = ground-truth weight, β = distillation weight, α + β = 1):

=================  ============================================  ===================================
label              what it looks like                            next β schedules
=================  ============================================  ===================================
diverged           a loss is NaN/inf, or rose ×10 over its        none: lower the learning rate
                   earlier minimum
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
nothing; overfitting is tested before underfitting because its "low training loss" excludes
underfitting's "high training loss" anyway, and a named symptom outranks the milder slow
convergence and plateau. "healthy" means no symptom was found, not that the trial is good.

In code the table is :data:`GUIDANCE`: one :class:`DiagnosisKind` per row, in that order, with
the row's test, recommendation, moves and the direction the search report counts it toward.
A new diagnosis is one more row there, with its test function beside the others.

For an adaptive schedule the "current" α is 1 − (the schedule's mean β over training). Next
ratios are clamped to [0, 1], rounded to 0.05, deduplicated, and never the current schedule.

Which training-loss curve is read: ``train/loss`` when β is constant. When β moves, the total
loss changes with the mix of its two terms, so the trend tests read ``train/student_loss`` (the
fit to ground truth) where it was reported. Every threshold is a field of :class:`Thresholds`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, STATES, TrialRecord
from kdtune.schedules import BetaSchedule, parse_schedule

LOSS_KEYS: tuple[str, ...] = ("train/loss", "train/student_loss", "train/distill_loss", "val/loss")

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


# ---------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """Every number the diagnosis compares against. Ratios are fractions, not percentages.

    - ``underfit_ap``: AP is *poor* when the trial's best ``val/ap`` is below this fraction of
      the search's best AP (used when ``best_ap_in_search`` is known and positive).
    - ``underfit_ap_abs``: otherwise AP is *poor* below this absolute value.
    - ``underfit_loss_ratio``: training loss is *high* when last / first is above this, and
      *low* (an overfitting precondition) at or below it.
    - ``overfit_gap``: validation loss *far above* train: (val − train) / train at the last
      evaluation above this. ``val/loss`` is the unweighted ground-truth L2, so it is set
      against ``train/student_loss`` (the same quantity on the training set) where reported,
      else against ``train/loss``.
    - ``overfit_rise``: validation loss *rising*: last value above its earlier minimum by more
      than this fraction, while the training loss fell after that minimum.
    - ``slow_slope``: *still falling steeply*: the training loss's mean relative drop per
      evaluation over the last ``slow_window`` evaluations is above this.
    - ``slow_window``: how many evaluations the slope spans (fewer if the trial has fewer).
    - ``plateau_evals``: how many last evaluations must show a flat AP.
    - ``plateau_delta``: AP is *flat* when its range (max − min) over them is below this.
    - ``diverge_factor``: a loss *exploded* when it exceeds this multiple of its earlier minimum.
    """

    underfit_ap: float = 0.8
    underfit_ap_abs: float = 0.1
    underfit_loss_ratio: float = 0.5
    overfit_gap: float = 0.5
    overfit_rise: float = 0.1
    slow_slope: float = 0.05
    slow_window: int = 3
    plateau_evals: int = 5
    plateau_delta: float = 0.005
    diverge_factor: float = 10.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_threshold(f.name, getattr(self, f.name), f.type == "int")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "thresholds") -> Thresholds:
        """Build from plain data (YAML/JSON); unknown keys and bad values raise KdtuneError."""
        if not isinstance(raw, Mapping):
            raise KdtuneError(f"{where}: expected a mapping, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in raw if k not in names)
        if unknown:
            raise KdtuneError(
                f"{where}: unknown key {unknown[0]!r} (choose from {', '.join(sorted(names))})"
            )
        try:
            return cls(**dict(raw))
        except KdtuneError as exc:
            raise KdtuneError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# Valid range per threshold: (low, high, low inclusive).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "underfit_ap": (0.0, 1.0, False),
    "underfit_ap_abs": (0.0, 1.0, True),
    "underfit_loss_ratio": (0.0, math.inf, False),
    "overfit_gap": (0.0, math.inf, False),
    "overfit_rise": (0.0, math.inf, False),
    "slow_slope": (0.0, 1.0, False),
    "slow_window": (1, math.inf, True),
    "plateau_evals": (2, math.inf, True),
    "plateau_delta": (0.0, 1.0, False),
    "diverge_factor": (1.0, math.inf, False),
}


def _check_threshold(name: str, value: Any, integer: bool) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise KdtuneError(f"{name}: must be {kind}, got {value!r}")
    low, high, inclusive = _RANGES[name]
    if value < low or (value == low and not inclusive) or value > high:
        bound = f"at least {low:g}" if inclusive else f"above {low:g}"
        tail = f" and at most {high:g}" if math.isfinite(high) else ""
        raise KdtuneError(f"{name}: must be {bound}{tail}, got {value!r}")


DEFAULT_THRESHOLDS = Thresholds()


# ---------------------------------------------------------------------------- diagnosis


@dataclass
class Diagnosis:
    """One trial's label, why (citing numbers), what to do, and the β schedules to try next."""

    label: str
    reason: str
    recommendation: str
    next_schedules: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Diagnosis:
        """The inverse of :meth:`to_dict` (e.g. across a process boundary)."""
        if not isinstance(raw, Mapping) or raw.get("label") not in LABELS:
            raise KdtuneError(
                f"diagnosis: expected a mapping with a label in {LABELS}, got {raw!r}"
            )
        try:
            evidence = {str(k): float(v) for k, v in dict(raw.get("evidence", {})).items()}
        except (TypeError, ValueError):
            raise KdtuneError(
                f"diagnosis: evidence must map names to numbers, got {raw!r}"
            ) from None
        return cls(
            label=str(raw["label"]),
            reason=str(raw.get("reason", "")),
            recommendation=str(raw.get("recommendation", "")),
            next_schedules=[str(s) for s in raw.get("next_schedules", [])],
            evidence=evidence,
        )


Point = tuple[int, float]  # (evaluation index, value)


@dataclass
class _Measures:
    """What the tests read off the curves; None where a curve is missing or too short."""

    n: int
    last_epoch: float | None = None
    nonfinite: str | None = None  # e.g. "train/loss is nan at evaluation 4"
    explosion: str | None = None
    trend_key: str = "train/loss"
    loss_first: float | None = None
    loss_last: float | None = None
    loss_ratio: float | None = None
    val_min: float | None = None
    val_min_epoch: str = ""
    val_last: float | None = None
    val_rise: float | None = None  # (last − earlier minimum) / minimum, None if min is last
    train_fell_after_val_min: bool = False
    gap: float | None = None
    gap_key: str = "train/loss"
    gap_train: float | None = None
    gap_val: float | None = None
    slope: float | None = None  # mean relative drop per evaluation at the end
    slope_window: int = 0
    ap_best: float | None = None
    ap_last: float | None = None
    ap_range: float | None = None  # max − min of AP over the last plateau_evals evaluations
    ap_lo: float | None = None
    ap_hi: float | None = None


def diagnose(
    history: Sequence[Mapping[str, Any]],
    schedule: str,
    *,
    level: str,
    max_epochs: int | None = None,
    state: str = COMPLETE,
    best_ap_in_search: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Diagnosis:
    """Classify one trial from its per-evaluation metrics (in evaluation order).

    ``schedule`` is the trial's β schedule spec; ``best_ap_in_search`` makes "poor AP"
    relative to the search's best (without any ``val/ap``, high training loss alone means
    underfitting). Missing keys and NaN AP values are skipped; a NaN or infinite loss means
    divergence. ``level == "teacher"`` gets no ratio moves (there is no distillation). Bad
    arguments raise :class:`KdtuneError`.
    """
    sched = parse_schedule(schedule)
    _check_args(level, max_epochs, state)
    rows = _rows(history)
    m = _measure(rows, sched, thresholds)
    ap_ref = _ap_reference(best_ap_in_search)
    kind, reason = _classify(m, thresholds, ap_ref)
    reason += _budget_note(m, max_epochs, state)
    rec = kind.recommend(sched)
    if level == "teacher":
        moves: list[str] = []
        rec = "no distillation weighting at the teacher level; " + rec
    else:
        moves = next_schedules(kind.label, sched)
        if kind.moves is not None and not moves:
            rec += " (already at the end of the range: no ratio move left)"
    evidence = _evidence(m, sched, max_epochs, best_ap_in_search)
    return Diagnosis(kind.label, reason, rec, moves, evidence)


def _check_args(level: Any, max_epochs: Any, state: Any) -> None:
    if not isinstance(level, str) or not level:
        raise KdtuneError(f"level: expected a level name, got {level!r}")
    if max_epochs is not None and (
        isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1
    ):
        raise KdtuneError(f"max_epochs: must be a positive integer, got {max_epochs!r}")
    if state not in STATES:
        raise KdtuneError(f"state: unknown trial state {state!r} (choose from {', '.join(STATES)})")


def _rows(history: Any) -> list[dict[str, float | None]]:
    """The history as dicts of floats (None = not reported); non-numbers raise KdtuneError."""
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise KdtuneError(f"history: expected a list of metric dicts, got {type(history).__name__}")
    rows = []
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise KdtuneError(f"history[{i}]: expected a dict of metrics, got {type(row).__name__}")
        rows.append({str(k): _number(v, f"history[{i}][{k!r}]") for k, v in row.items()})
    return rows


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KdtuneError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _finite(rows: list[dict[str, float | None]], key: str) -> list[Point]:
    out = []
    for i, row in enumerate(rows):
        v = row.get(key)
        if v is not None and math.isfinite(v):
            out.append((i, v))
    return out


def _ap_reference(best_ap_in_search: Any) -> float | None:
    if best_ap_in_search is None:
        return None
    value = _number(best_ap_in_search, "best_ap_in_search")
    return value if value is not None and math.isfinite(value) and value > 0 else None


# ---------------------------------------------------------------------------- measuring


def _measure(rows: list[dict[str, float | None]], sched: BetaSchedule, th: Thresholds) -> _Measures:
    m = _Measures(n=len(rows))
    epochs = _finite(rows, "epoch")
    m.last_epoch = epochs[-1][1] if epochs else None
    constant = sched.beta_start == sched.beta_end or sched.shape == "fixed"
    m.nonfinite = _find_nonfinite(rows)
    m.explosion = _find_explosion(rows, constant, th.diverge_factor)
    m.trend_key = _trend_key(rows, constant)
    trend = _finite(rows, m.trend_key)
    _measure_trend(m, trend, th)
    _measure_val(m, rows, trend)
    _measure_ap(m, _finite(rows, "val/ap"), th)
    return m


def _find_nonfinite(rows: list[dict[str, float | None]]) -> str | None:
    for i, row in enumerate(rows):
        for key in LOSS_KEYS:
            v = row.get(key)
            if v is not None and not math.isfinite(v):
                return f"{key} is {v} at {_where(rows, i)}"
    return None


def _find_explosion(
    rows: list[dict[str, float | None]], constant: bool, factor: float
) -> str | None:
    """A loss above ``factor`` × its minimum so far. With a moving β, totals change with the
    mix of their terms, so only the two unweighted terms are checked."""
    keys = LOSS_KEYS if constant else ("train/student_loss", "train/distill_loss")
    for key in keys:
        low = math.inf
        for i, v in _finite(rows, key):
            if 0 < low < math.inf and v > factor * low:
                return (
                    f"{key} rose to {v:.4g} at {_where(rows, i)}, "
                    f"{v / low:.3g}× its earlier minimum {low:.4g}"
                )
            low = min(low, v)
    return None


def _trend_key(rows: list[dict[str, float | None]], constant: bool) -> str:
    if not constant and _finite(rows, "train/student_loss"):
        return "train/student_loss"
    if _finite(rows, "train/loss"):
        return "train/loss"
    return "train/student_loss"


def _measure_trend(m: _Measures, trend: list[Point], th: Thresholds) -> None:
    if len(trend) < 2:
        return
    m.loss_first, m.loss_last = trend[0][1], trend[-1][1]
    if m.loss_first > 0:
        m.loss_ratio = m.loss_last / m.loss_first
    w = min(th.slow_window, len(trend) - 1)
    start, end = trend[-1 - w][1], trend[-1][1]
    if start > 0 and end > 0:
        m.slope = 1.0 - (end / start) ** (1.0 / w)
        m.slope_window = w


def _measure_val(m: _Measures, rows: list[dict[str, float | None]], trend: list[Point]) -> None:
    val = _finite(rows, "val/loss")
    if len(val) >= 2:
        i_min, v_min = min(val, key=lambda p: p[1])
        m.val_min, m.val_last = v_min, val[-1][1]
        m.val_min_epoch = _where(rows, i_min)
        if i_min < val[-1][0] and v_min > 0:
            m.val_rise = (m.val_last - v_min) / v_min
            before = [v for i, v in trend if i <= i_min]
            m.train_fell_after_val_min = bool(before and trend and trend[-1][1] < before[-1])
    m.gap_key = "train/student_loss" if _finite(rows, "train/student_loss") else "train/loss"
    train = dict(_finite(rows, m.gap_key))
    both = [(i, train[i], v) for i, v in val if i in train]
    if both and both[-1][1] > 0:
        _, m.gap_train, m.gap_val = both[-1]
        m.gap = (m.gap_val - m.gap_train) / m.gap_train


def _measure_ap(m: _Measures, ap: list[Point], th: Thresholds) -> None:
    if not ap:
        return
    m.ap_best, m.ap_last = max(v for _, v in ap), ap[-1][1]
    if len(ap) >= th.plateau_evals:
        window = [v for _, v in ap[-th.plateau_evals :]]
        m.ap_lo, m.ap_hi = min(window), max(window)
        m.ap_range = m.ap_hi - m.ap_lo


def _where(rows: list[dict[str, float | None]], i: int) -> str:
    epoch = rows[i].get("epoch")
    if epoch is not None and math.isfinite(epoch):
        return f"epoch {epoch:g}"
    return f"evaluation {i + 1}"


# ---------------------------------------------------------------------------- the guidance table

# A row's test: the curves' measures, the thresholds and the search's best AP (None when
# unknown) → why the label applies, citing numbers, or None when it does not.
Test = Callable[[_Measures, Thresholds, float | None], str | None]
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


def _test_diverged(m: _Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    return m.nonfinite or m.explosion


def _loss_is_low(m: _Measures, th: Thresholds) -> bool:
    return m.loss_ratio is not None and m.loss_ratio <= th.underfit_loss_ratio


def _test_overfitting(m: _Measures, th: Thresholds, ap_ref: float | None) -> str | None:
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


def _test_underfitting(m: _Measures, th: Thresholds, ap_ref: float | None) -> str | None:
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


def _test_slow(m: _Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.slope is None or m.slope <= th.slow_slope:
        return None
    return (
        f"{m.trend_key} still falling {m.slope:.1%} per evaluation over the last "
        f"{m.slope_window} evaluations (threshold {th.slow_slope:.1%}), down to {m.loss_last:.4g}"
    )


def _test_plateau(m: _Measures, th: Thresholds, ap_ref: float | None) -> str | None:
    if m.ap_range is None or m.ap_range >= th.plateau_delta:
        return None
    return (
        f"val/ap flat over the last {th.plateau_evals} evaluations: {m.ap_lo:.3f}–{m.ap_hi:.3f}, "
        f"range {m.ap_range:.4f} < {th.plateau_delta:g}"
    )


def _test_healthy(m: _Measures, th: Thresholds, ap_ref: float | None) -> str:
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


def _classify(m: _Measures, th: Thresholds, ap_ref: float | None) -> tuple[DiagnosisKind, str]:
    for kind in GUIDANCE:
        reason = kind.test(m, th, ap_ref)
        if reason:
            return kind, reason
    raise AssertionError("the guidance table's last row must always pass")


def _budget_note(m: _Measures, max_epochs: int | None, state: str) -> str:
    if state == COMPLETE:
        return ""
    at = f" at epoch {m.last_epoch:g}" if m.last_epoch is not None else ""
    of = f" of {max_epochs}" if max_epochs is not None and at else ""
    return f" (trial {state}{at}{of})"


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
    return _distinct(moves(alpha), exclude=sched.spec)


def _snap(x: float) -> float:
    """Clamp to [0, 1] and round to the grid."""
    return round(round(min(max(x, 0.0), 1.0) / GRID) * GRID, 4)


def _fixed(alpha: float) -> str:
    return parse_schedule(f"fixed:{_snap(1.0 - _snap(alpha)):g}").spec


def _distinct(specs: Sequence[str], exclude: str | Sequence[str] = ()) -> list[str]:
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


def _evidence(
    m: _Measures, sched: BetaSchedule, max_epochs: int | None, best_ap_in_search: Any
) -> dict[str, float]:
    beta = mean_beta(sched)
    raw: dict[str, Any] = {
        "evaluations": m.n,
        "last_epoch": m.last_epoch,
        "max_epochs": max_epochs,
        "alpha": 1.0 - beta,
        "beta_mean": beta,
        "train_loss_first": m.loss_first,
        "train_loss_last": m.loss_last,
        "train_loss_ratio": m.loss_ratio,
        "val_loss_min": m.val_min,
        "val_loss_last": m.val_last,
        "val_loss_rise": m.val_rise,
        "val_train_gap": m.gap,
        "train_loss_slope": m.slope,
        "ap_best": m.ap_best,
        "ap_last": m.ap_last,
        "ap_window_range": m.ap_range,
        "best_ap_in_search": _ap_reference(best_ap_in_search),
    }
    return {k: float(v) for k, v in raw.items() if v is not None and math.isfinite(v)}


# ---------------------------------------------------------------------------- search report


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
    labels = [t.diagnosis.label for t in trials if t.diagnosis is not None]
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
    return _distinct(moves, exclude=[t.schedule for t in trials])


def diagnose_trial(
    record: TrialRecord,
    best_ap_in_search: float | None = None,
    thresholds: Thresholds | None = None,
) -> Diagnosis:
    """Diagnose a search's trial from its record (a chain is judged by its second level, the
    one that reports)."""
    cfg = record.config
    epochs = cfg.get("epochs")
    return diagnose(
        record.history,
        record.reported_schedule,
        level=str(cfg.get("level", "second")),
        max_epochs=epochs if isinstance(epochs, int) and epochs > 0 else None,
        state=record.state,
        best_ap_in_search=best_ap_in_search,
        thresholds=thresholds or DEFAULT_THRESHOLDS,
    )
