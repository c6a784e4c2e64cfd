"""Reading a trial's curves: its history checked and turned into floats, then measured.

Which training-loss curve is read: ``train/loss`` when β is constant. When β moves, the total
loss changes with the mix of its two terms, so the trend tests read ``train/student_loss`` (the
fit to ground truth) where it was reported. Every threshold is a field of
:class:`~kdtune.diagnose.thresholds.Thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdtune.checks import is_number
from kdtune.diagnose.thresholds import Thresholds
from kdtune.errors import KdtuneError
from kdtune.schedules import BetaSchedule

LOSS_KEYS: tuple[str, ...] = ("train/loss", "train/student_loss", "train/distill_loss", "val/loss")
Point = tuple[int, float]  # (evaluation index, value)


@dataclass
class Measures:
    """What the tests read off the curves; None where a curve is missing or too short."""

    n: int
    state: str = "complete"  # the trial's state (kdtune.results.STATES)
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


def history_rows(history: Any) -> list[dict[str, float | None]]:
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
    if not is_number(value):
        raise KdtuneError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _finite(rows: list[dict[str, float | None]], key: str) -> list[Point]:
    out = []
    for i, row in enumerate(rows):
        v = row.get(key)
        if v is not None and math.isfinite(v):
            out.append((i, v))
    return out


def ap_reference(best_ap_in_search: Any) -> float | None:
    """The search's best AP as a float, or None where it is unknown, not finite or not positive."""
    if best_ap_in_search is None:
        return None
    value = _number(best_ap_in_search, "best_ap_in_search")
    return value if value is not None and math.isfinite(value) and value > 0 else None


def measure(
    rows: list[dict[str, float | None]],
    sched: BetaSchedule,
    th: Thresholds,
    state: str = "complete",
) -> Measures:
    """Everything the guidance's tests read off a trial's curves (and its state)."""
    m = Measures(n=len(rows), state=state)
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


def _measure_trend(m: Measures, trend: list[Point], th: Thresholds) -> None:
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


def _measure_val(m: Measures, rows: list[dict[str, float | None]], trend: list[Point]) -> None:
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


def _measure_ap(m: Measures, ap: list[Point], th: Thresholds) -> None:
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
