"""The diagnosis's thresholds: every number a test compares against, and their valid ranges."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kdtune.errors import KdtuneError


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
