"""What a search space searches: dimensions (a constant, a range, a list of choices), the
distillation weighting of a level, and explicit grid points.

Internal to :mod:`kdtune.space`, which re-exports the public names; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from kdtune import checks
from kdtune.checks import Where
from kdtune.config import alpha_to_schedule
from kdtune.errors import KdtuneError
from kdtune.schedules import (
    ADAPTIVE_SHAPES,
    SHAPE_BY_NAME,
    SHAPE_OPTIONS,
    BetaSchedule,
    parse_schedule,
    shapes_taking,
)

WARMUP_MAX = 0.99
SLOTS: dict[str, tuple[str, str]] = {  # search key -> (parameter suffix, TrainConfig key)
    "weighting": ("", "schedule"),
    "weighting_first": ("_first", "schedule"),
    "weighting_second": ("_second", "schedule_second"),
}


# ---------------------------------------------------------------------------------------------
# Dimensions: a constant, a range or a list of choices


@dataclass(frozen=True)
class Const:
    """A value fixed by the file: not an Optuna parameter."""

    value: float | int

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float | int:
        return self.value

    def describe(self) -> str:
        return f"= {self.value:g}"

    def contains(self, value: float) -> bool:
        return abs(float(self.value) - value) < _TOLERANCE


@dataclass(frozen=True)
class Range:
    """A numeric interval, sampled with ``suggest_float`` (or ``suggest_int`` when integer)."""

    low: float | int
    high: float | int
    step: float | int | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float | int:
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(
            name, float(self.low), float(self.high), step=self.step, log=self.log
        )

    def contains(self, value: float) -> bool:
        if not self.low - _TOLERANCE <= value <= self.high + _TOLERANCE:
            return False
        if self.step is None:
            return not self.integer or float(value).is_integer()
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-6

    def describe(self) -> str:
        text = f"in [{self.low:g}, {self.high:g}]"
        if self.step is not None:
            text += f" step {self.step:g}"
        if self.log:
            text += " log"
        return text


@dataclass(frozen=True)
class Choice:
    """A list of values, sampled with ``suggest_categorical``."""

    values: tuple[float | int, ...]

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float | int:
        return trial.suggest_categorical(name, list(self.values))

    def describe(self) -> str:
        return "in {" + ", ".join(f"{v:g}" for v in self.values) + "}"

    def contains(self, value: float) -> bool:
        return any(abs(float(v) - value) < _TOLERANCE for v in self.values)

    def nearest(self, value: float) -> float | int:
        return min(self.values, key=lambda v: abs(float(v) - value))


Dimension = Const | Range | Choice
_TOLERANCE = 1e-9


def _param(dim: Dimension, value: float) -> tuple[bool, float | int | None]:
    """Whether ``dim`` can take ``value``, and what an Optuna trial must be given for it to:
    nothing (None) for a constant, the value (a choice's own) otherwise."""
    if not dim.contains(value):
        return False, None
    if isinstance(dim, Const):
        return True, None
    return True, dim.nearest(value) if isinstance(dim, Choice) else value


@dataclass(frozen=True)
class Bounds:
    """What values a dimension may take: interval, integer or real, log allowed."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def check(self, raw: Any, where: Where) -> float | int:
        if self.integer:
            return checks.integer(raw, where, low=int(self.low), high=int(self.high))
        return checks.number(
            raw,
            where,
            low=self.low,
            high=self.high,
            low_open=self.low_open,
            high_open=self.high_open,
        )


UNIT = Bounds(0.0, 1.0)
WARMUP = Bounds(0.0, WARMUP_MAX)
LR = Bounds(0.0, 1.0, low_open=True)
BATCH = Bounds(1, 65536, integer=True)


def parse_dimension(raw: Any, where: Where, bounds: Bounds) -> Dimension:
    """Parse a number (constant), ``{low, high, step?, log?}``, ``{values: [...]}`` or a list."""
    if isinstance(raw, list):
        return _choice(raw, where, bounds)
    if isinstance(raw, dict):
        if "values" in raw:
            checks.mapping(raw, where, ("values",))
            return _choice(raw["values"], where.at("values"), bounds)
        return _range(raw, where, bounds)
    return Const(bounds.check(raw, where))


def _choice(raw: Any, where: Where, bounds: Bounds) -> Choice:
    if not isinstance(raw, list) or not raw:
        where.fail("must be a non-empty list of values", raw)
    values = tuple(bounds.check(v, where.item(i)) for i, v in enumerate(raw))
    for i, v in enumerate(values):
        if v in values[:i]:
            where.item(i).fail("duplicate value", raw[i])
    return Choice(values)


def _range(raw: dict[str, Any], where: Where, bounds: Bounds) -> Range:
    checks.mapping(raw, where, ("low", "high", "step", "log"), required=("low", "high"))
    low = bounds.check(raw["low"], where.at("low"))
    high = bounds.check(raw["high"], where.at("high"))
    if low > high:
        where.at("high").fail(f"must not be below low ({low:g})", raw["high"])
    log = checks.boolean(raw["log"], where.at("log")) if "log" in raw else False
    if log and low <= 0:
        where.at("low").fail("must be above 0 for a log range", raw["low"])
    step: float | int | None = None
    if "step" in raw and raw["step"] is not None:
        at_step = where.at("step")
        if log:
            at_step.fail("cannot be combined with log: true", raw["step"])
        if bounds.integer:
            step = checks.integer(raw["step"], at_step, low=1)
        else:
            step = checks.number(raw["step"], at_step, low=0.0, low_open=True)
        count = (high - low) / step
        if abs(count - round(count)) > 1e-6:
            at_step.fail(f"must divide high - low ({high - low:g})", raw["step"])
    return Range(low, high, step, log, bounds.integer)


# ---------------------------------------------------------------------------------------------
# Weighting: a fixed ratio α, an adaptive β schedule, or a choice between them


@dataclass(frozen=True)
class Weighting:
    """How one level's distillation weight is searched.

    ``alpha`` (the ground-truth weight; β = 1 − α) is set when fixed ratios are searched;
    ``shapes`` (and the β parameters) when adaptive schedules are. With both, the trial
    first chooses ``weighting`` among ``fixed`` and ``adaptive``.
    """

    alpha: Dimension | None = None
    shapes: tuple[str, ...] = ()
    beta_start: Dimension = Const(0.9)
    beta_end: Dimension = Const(0.5)
    warmup: Dimension = Const(0.0)
    # the dimensions of shape-specific options (e.g. step's ``at``), by option name
    options: dict[str, Dimension] = field(default_factory=dict)

    def option(self, name: str) -> Dimension:
        return self.options.get(name) or Const(BetaSchedule.option_default(name))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, on in (("fixed", self.alpha), ("adaptive", self.shapes)) if on)

    def suggest(self, trial: optuna.trial.BaseTrial, suffix: str = "") -> str:
        """Sample a β schedule spec; parameter names get ``suffix`` (``_first``/``_second``)."""
        kinds = self.kinds
        kind = (
            trial.suggest_categorical("weighting" + suffix, list(kinds))
            if len(kinds) > 1
            else kinds[0]
        )
        if kind == "fixed":
            assert self.alpha is not None
            return alpha_to_schedule(self.alpha.suggest(trial, "alpha" + suffix))
        shapes = self.shapes
        shape = (
            trial.suggest_categorical("shape" + suffix, list(shapes))
            if len(shapes) > 1
            else shapes[0]
        )
        start = float(self.beta_start.suggest(trial, "beta_start" + suffix))
        end = float(self.beta_end.suggest(trial, "beta_end" + suffix))
        warmup = float(self.warmup.suggest(trial, "warmup" + suffix))
        opts = {
            name: float(self.option(name).suggest(trial, name + suffix))
            for name in SHAPE_BY_NAME[str(shape)].options
        }
        spec = BetaSchedule(str(shape), start, end, warmup=warmup, **opts).spec
        return parse_schedule(spec).spec  # a round trip proves the spec parses

    def params_for(self, spec: str, suffix: str = "") -> dict[str, Any] | None:
        """The Optuna parameters under which :meth:`suggest` gives the schedule ``spec``, or
        None where this weighting cannot give it (a warm start enqueues these)."""
        sched = parse_schedule(spec)
        kind = "fixed" if sched.shape == "fixed" else "adaptive"
        if kind not in self.kinds:
            return None
        params: dict[str, Any] = {}
        if len(self.kinds) > 1:
            params["weighting" + suffix] = kind
        if kind == "fixed":
            assert self.alpha is not None and sched.alpha is not None
            wanted: list[tuple[str, Dimension, float]] = [("alpha", self.alpha, sched.alpha)]
        else:
            if sched.shape not in self.shapes:
                return None
            if len(self.shapes) > 1:
                params["shape" + suffix] = sched.shape
            wanted = [
                ("beta_start", self.beta_start, sched.beta_start),
                ("beta_end", self.beta_end, sched.beta_end),
                ("warmup", self.warmup, sched.warmup),
                *((name, self.option(name), v) for name, v in sched.options.items()),
            ]
        for name, dim, value in wanted:
            fits, param = _param(dim, value)
            if not fits:
                return None
            if param is not None:
                params[name + suffix] = param
        return params

    def describe_lines(self, suffix: str = "") -> list[str]:
        """One line per parameter, conditional ones marked with their condition."""
        lines = []
        if len(self.kinds) > 1:
            lines.append(f"weighting{suffix} in {{{', '.join(self.kinds)}}}")
        if self.alpha is not None:
            lines.append(f"alpha{suffix} {self.alpha.describe()}   (fixed; beta = 1 - alpha)")
        if self.shapes:
            if len(self.shapes) > 1:
                lines.append(f"shape{suffix} in {{{', '.join(self.shapes)}}}   (adaptive)")
            else:
                lines.append(f"shape{suffix} = {self.shapes[0]}   (adaptive)")
            for name in ("beta_start", "beta_end", "warmup"):
                lines.append(f"{name}{suffix} {getattr(self, name).describe()}   (adaptive)")
            for name in SHAPE_OPTIONS:
                owners = [s for s in shapes_taking(name) if s in self.shapes]
                if owners:
                    only = "/".join(owners)
                    lines.append(f"{name}{suffix} {self.option(name).describe()}   ({only} only)")
        return lines


def parse_weighting(raw: Any, where: Where) -> Weighting:
    checks.mapping(raw, where, ("fixed", "adaptive"))
    if not raw:
        where.fail("give fixed:, adaptive: or both")
    alpha = None
    if "fixed" in raw:
        fixed = checks.mapping(raw["fixed"], where.at("fixed"), ("alpha",), required=("alpha",))
        alpha = parse_dimension(fixed["alpha"], where.at("fixed.alpha"), UNIT)
    if "adaptive" not in raw:
        return Weighting(alpha=alpha)
    here = where.at("adaptive")
    ada = checks.mapping(
        raw["adaptive"],
        here,
        ("shapes", "beta_start", "beta_end", "warmup", *SHAPE_OPTIONS),
        required=("beta_start", "beta_end"),
    )
    shapes = _shapes(ada.get("shapes", list(ADAPTIVE_SHAPES)), here.at("shapes"))
    for name in SHAPE_OPTIONS:
        owners = shapes_taking(name)
        if name in ada and not set(owners) & set(shapes):
            here.at(name).fail(
                f"applies to the {'/'.join(owners)} shape only, which shapes does not list"
            )
    return Weighting(
        alpha=alpha,
        shapes=shapes,
        beta_start=parse_dimension(ada["beta_start"], here.at("beta_start"), UNIT),
        beta_end=parse_dimension(ada["beta_end"], here.at("beta_end"), UNIT),
        warmup=parse_dimension(ada.get("warmup", 0.0), here.at("warmup"), WARMUP),
        options={
            name: parse_dimension(ada[name], here.at(name), UNIT)
            for name in SHAPE_OPTIONS
            if name in ada
        },
    )


def _shapes(raw: Any, where: Where) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        where.fail(f"must be a non-empty list among {', '.join(ADAPTIVE_SHAPES)}", raw)
    for i, shape in enumerate(items):
        if shape == "fixed":
            where.item(i).fail("a fixed ratio is searched under fixed: (alpha), not as a shape")
        checks.string(shape, where.item(i), ADAPTIVE_SHAPES)
        if shape in items[:i]:
            where.item(i).fail("duplicate shape", shape)
    return tuple(items)


# ---------------------------------------------------------------------------------------------
# Grid points


@dataclass(frozen=True)
class GridPoint:
    """One explicit trial: the file's entry as written, and its TrainConfig overrides."""

    raw: dict[str, Any]
    overrides: dict[str, Any]

    def label(self) -> str:
        return ", ".join(
            f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}" for k, v in self.raw.items()
        )


def parse_grid(raw: Any, where: Where, level: str) -> tuple[GridPoint, ...]:
    if not isinstance(raw, list) or not raw:
        where.fail("must be a non-empty list of points", raw)
    points: list[GridPoint] = []
    for i, item in enumerate(raw):
        point = _grid_point(item, where.item(i), level)
        if any(p.overrides == point.overrides for p in points):
            where.item(i).fail("duplicate point", item)
        points.append(point)
    return tuple(points)


def _grid_point(raw: Any, where: Where, level: str) -> GridPoint:
    slots = (
        [("_first", "schedule"), ("_second", "schedule_second")]
        if level == "chain"
        else [("", "schedule")]
    )
    allowed = [f"{name}{s}" for s, _ in slots for name in ("alpha", "schedule")] + [
        "lr",
        "batch_size",
    ]
    checks.mapping(raw, where, allowed)
    if not raw:
        where.fail("an empty point (give alpha or schedule, lr, batch_size)")
    overrides: dict[str, Any] = {}
    for suffix, target in slots:
        a_key, s_key = f"alpha{suffix}", f"schedule{suffix}"
        if a_key in raw and s_key in raw:
            where.at(s_key).fail(f"give either {a_key} or {s_key}, not both")
        if a_key in raw:
            alpha = checks.number(raw[a_key], where.at(a_key), low=0.0, high=1.0)
            overrides[target] = alpha_to_schedule(alpha)
        elif s_key in raw:
            overrides[target] = parse_schedule_spec(raw[s_key], where.at(s_key))
        elif level == "chain":
            where.at(a_key).fail(f"missing: each chain point needs {a_key} or {s_key}")
    if "lr" in raw:
        overrides["lr"] = LR.check(raw["lr"], where.at("lr"))
    if "batch_size" in raw:
        overrides["batch_size"] = BATCH.check(raw["batch_size"], where.at("batch_size"))
    return GridPoint(dict(raw), overrides)


def parse_schedule_spec(raw: Any, where: Where) -> str:
    """A β schedule spec, normalised (``linear:0.9:0.5``)."""
    if not isinstance(raw, str):
        where.fail("must be a schedule spec such as 'linear:0.9:0.5'", raw)
    try:
        return parse_schedule(raw).spec
    except KdtuneError as exc:
        where.fail(str(exc).removeprefix("schedule: "))
