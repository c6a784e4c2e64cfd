"""Search-space files: parse and validate a YAML space, then sample trials from it.

A search space says which level is trained, on which data, with which sampler, pruner, budget
and per-trial resources, and which dimensions are searched: the distillation weighting (a fixed
ratio α or an adaptive β schedule), optionally the learning rate and the batch size, or an
explicit list of grid points. The format is documented in ``docs/search-spaces.md``.

Every problem with a file raises :class:`~kdtune.errors.KdtuneError` with one line naming the
file, the key path (``search.weighting.fixed.alpha.low``) and the bad value.

Sampling is define-by-run: :meth:`SearchSpace.suggest` asks an Optuna trial for the parameters
and returns :class:`~kdtune.config.TrainConfig` overrides (``schedule``, ``schedule_second``,
``lr``, ``batch_size``); a shape's parameters are asked for only when that shape is chosen.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import os
import re
import reprlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml

from kdtune.config import TEACHER_RECIPES, TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError
from kdtune.schedules import BetaSchedule, parse_schedule

__all__ = [
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "Budget",
    "Choice",
    "Const",
    "GridPoint",
    "PrunerSpec",
    "Range",
    "Resources",
    "SamplerSpec",
    "SearchSpace",
    "TeacherSpec",
    "Weighting",
    "check_paths",
    "describe",
    "load_space",
    "make_pruner",
    "make_sampler",
    "parse_space",
]

SPACE_LEVELS: tuple[str, ...] = ("first", "second", "chain")
LEVEL_TEXT: dict[str, str] = {
    "first": "first (teacher -> med)",
    "second": "second (med -> tiny)",
    "chain": "chain (teacher -> med -> tiny)",
}
# The one metric vocabulary (see ARCHITECTURE.md); losses are minimised, the rest maximised.
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
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
}
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "wilcoxon": "WilcoxonPruner",
    "patient": "PatientPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
# Sampler arguments a file may not set: the seed has its own key, the grid comes from search.grid.
_SAMPLER_RESERVED: dict[str, str] = {
    "seed": "set sampler.seed instead",
    "search_space": "list the points in search.grid instead",
}
_PACKAGES: dict[str, str] = {"cmaes": "cmaes"}  # sampler type -> the extra package it needs
ADAPTIVE_SHAPES: tuple[str, ...] = ("linear", "cosine", "step")
WARMUP_MAX = 0.99
# TrainConfig keys the space file sets elsewhere (key -> where).
_TRAIN_RESERVED: dict[str, str] = {
    "level": "level",
    "data": "data",
    "epochs": "budget.max_epochs",
    "eval_every": "budget.eval_every",
    "teacher_checkpoint": "teacher.checkpoint",
    "teacher_epochs": "teacher.epochs",
    "teacher_recipe": "teacher.recipe",
}
_TOP_KEYS: tuple[str, ...] = (
    "name",
    "level",
    "data",
    "metric",
    "mode",
    "sampler",
    "pruner",
    "budget",
    "resources",
    "teacher",
    "train",
    "search",
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MISSING: Any = object()
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 6, 60, 60


def _show(value: Any) -> str:
    """A short one-line repr of a (possibly huge or self-referencing) YAML value."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails is still worth an error message
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 80 else text[:77] + "..."


class _Where:
    """Raises one-line errors that name the file and a key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str, value: Any = _MISSING) -> NoReturn:
        text = f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}"
        if value is not _MISSING:
            text += f", got {_show(value)}"
        raise KdtuneError(" ".join(text.splitlines()))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------------------------
# Scalar and mapping checks


def _mapping(
    w: _Where,
    key: str,
    raw: Any,
    allowed: Sequence[str],
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """``raw`` as a mapping with string keys among ``allowed`` and every ``required`` key."""
    if not isinstance(raw, dict):
        w.fail(key or "(top level)", "expected a mapping", raw)
    for k in raw:
        if not isinstance(k, str):
            w.fail(key or "(top level)", "keys must be strings", k)
        if k not in allowed:
            w.fail(_join(key, k), f"unknown key (expected one of: {', '.join(allowed)})")
    for k in required:
        if k not in raw:
            w.fail(_join(key, k), "missing (required)")
    return raw


def _number(
    w: _Where,
    key: str,
    raw: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within the given bounds, as a float."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        w.fail(key, "must be a number", raw)
    try:
        value = float(raw)
    except OverflowError:
        w.fail(key, "number too large", raw)
    if not math.isfinite(value):
        w.fail(key, "must be a finite number", raw)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        w.fail(key, f"must be in {left}{low:g}, {high:g}{right}", raw)
    return value


def _integer(w: _Where, key: str, raw: Any, *, low: int = 1, high: int | None = None) -> int:
    """An integer (not a bool) in ``[low, high]``."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        w.fail(key, "must be an integer", raw)
    if raw < low or (high is not None and raw > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        w.fail(key, f"must be {bound}", raw)
    return raw


def _string(w: _Where, key: str, raw: Any, choices: Sequence[str] | None = None) -> str:
    """A non-empty string, optionally one of ``choices``."""
    if not isinstance(raw, str) or not raw.strip():
        w.fail(key, "must be a non-empty string", raw)
    if choices is not None and raw not in choices:
        w.fail(key, f"must be one of: {', '.join(choices)}", raw)
    return raw


def _bool(w: _Where, key: str, raw: Any) -> bool:
    if not isinstance(raw, bool):
        w.fail(key, "must be true or false", raw)
    return raw


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


Dimension = Const | Range | Choice


@dataclass(frozen=True)
class _Bounds:
    """What values a dimension may take: interval, integer or real, log allowed."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def check(self, w: _Where, key: str, raw: Any) -> float | int:
        if self.integer:
            return _integer(w, key, raw, low=int(self.low), high=int(self.high))
        return _number(
            w,
            key,
            raw,
            low=self.low,
            high=self.high,
            low_open=self.low_open,
            high_open=self.high_open,
        )


_UNIT = _Bounds(0.0, 1.0)
_WARMUP = _Bounds(0.0, WARMUP_MAX)
_LR = _Bounds(0.0, 1.0, low_open=True)
_BATCH = _Bounds(1, 65536, integer=True)


def _dimension(w: _Where, key: str, raw: Any, bounds: _Bounds) -> Dimension:
    """Parse a number (constant), ``{low, high, step?, log?}``, ``{values: [...]}`` or a list."""
    if isinstance(raw, list):
        return _choice(w, key, raw, bounds)
    if isinstance(raw, dict):
        if "values" in raw:
            _mapping(w, key, raw, ("values",))
            return _choice(w, _join(key, "values"), raw["values"], bounds)
        return _range(w, key, raw, bounds)
    return Const(bounds.check(w, key, raw))


def _choice(w: _Where, key: str, raw: Any, bounds: _Bounds) -> Choice:
    if not isinstance(raw, list) or not raw:
        w.fail(key, "must be a non-empty list of values", raw)
    values = tuple(bounds.check(w, f"{key}[{i}]", v) for i, v in enumerate(raw))
    for i, v in enumerate(values):
        if v in values[:i]:
            w.fail(f"{key}[{i}]", "duplicate value", raw[i])
    return Choice(values)


def _range(w: _Where, key: str, raw: dict[str, Any], bounds: _Bounds) -> Range:
    _mapping(w, key, raw, ("low", "high", "step", "log"), required=("low", "high"))
    low = bounds.check(w, _join(key, "low"), raw["low"])
    high = bounds.check(w, _join(key, "high"), raw["high"])
    if low > high:
        w.fail(_join(key, "high"), f"must not be below low ({low:g})", raw["high"])
    log = _bool(w, _join(key, "log"), raw["log"]) if "log" in raw else False
    if log and low <= 0:
        w.fail(_join(key, "low"), "must be above 0 for a log range", raw["low"])
    step: float | int | None = None
    if "step" in raw and raw["step"] is not None:
        if log:
            w.fail(_join(key, "step"), "cannot be combined with log: true", raw["step"])
        if bounds.integer:
            step = _integer(w, _join(key, "step"), raw["step"])
        else:
            step = _number(w, _join(key, "step"), raw["step"], low=0.0, low_open=True)
        count = (high - low) / step
        if abs(count - round(count)) > 1e-6:
            w.fail(_join(key, "step"), f"must divide high - low ({high - low:g})", raw["step"])
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
    at: Dimension = Const(0.5)

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
        at = float(self.at.suggest(trial, "at" + suffix)) if shape == "step" else 0.5
        spec = BetaSchedule(str(shape), start, end, warmup=warmup, at=at).spec
        return parse_schedule(spec).spec  # a round trip proves the spec parses

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
            if "step" in self.shapes:
                lines.append(f"at{suffix} {self.at.describe()}   (step only)")
        return lines


def _weighting(w: _Where, key: str, raw: Any) -> Weighting:
    _mapping(w, key, raw, ("fixed", "adaptive"))
    if not raw:
        w.fail(key, "give fixed:, adaptive: or both")
    alpha = None
    if "fixed" in raw:
        fixed = _mapping(w, _join(key, "fixed"), raw["fixed"], ("alpha",), required=("alpha",))
        alpha = _dimension(w, _join(key, "fixed.alpha"), fixed["alpha"], _UNIT)
    if "adaptive" not in raw:
        return Weighting(alpha=alpha)
    akey = _join(key, "adaptive")
    ada = _mapping(
        w,
        akey,
        raw["adaptive"],
        ("shapes", "beta_start", "beta_end", "warmup", "at"),
        required=("beta_start", "beta_end"),
    )
    shapes = _shapes(w, _join(akey, "shapes"), ada.get("shapes", list(ADAPTIVE_SHAPES)))
    if "at" in ada and "step" not in shapes:
        w.fail(_join(akey, "at"), "applies to the step shape only, which shapes does not list")
    return Weighting(
        alpha=alpha,
        shapes=shapes,
        beta_start=_dimension(w, _join(akey, "beta_start"), ada["beta_start"], _UNIT),
        beta_end=_dimension(w, _join(akey, "beta_end"), ada["beta_end"], _UNIT),
        warmup=_dimension(w, _join(akey, "warmup"), ada.get("warmup", 0.0), _WARMUP),
        at=_dimension(w, _join(akey, "at"), ada.get("at", 0.5), _UNIT),
    )


def _shapes(w: _Where, key: str, raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        w.fail(key, f"must be a non-empty list among {', '.join(ADAPTIVE_SHAPES)}", raw)
    for i, shape in enumerate(items):
        if shape == "fixed":
            w.fail(f"{key}[{i}]", "a fixed ratio is searched under fixed: (alpha), not as a shape")
        _string(w, f"{key}[{i}]", shape, ADAPTIVE_SHAPES)
        if shape in items[:i]:
            w.fail(f"{key}[{i}]", "duplicate shape", shape)
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


def _grid(w: _Where, key: str, raw: Any, level: str) -> tuple[GridPoint, ...]:
    if not isinstance(raw, list) or not raw:
        w.fail(key, "must be a non-empty list of points", raw)
    points: list[GridPoint] = []
    for i, item in enumerate(raw):
        point = _grid_point(w, f"{key}[{i}]", item, level)
        if any(p.overrides == point.overrides for p in points):
            w.fail(f"{key}[{i}]", "duplicate point", item)
        points.append(point)
    return tuple(points)


def _grid_point(w: _Where, key: str, raw: Any, level: str) -> GridPoint:
    slots = (
        [("_first", "schedule"), ("_second", "schedule_second")]
        if level == "chain"
        else [("", "schedule")]
    )
    allowed = [f"{name}{s}" for s, _ in slots for name in ("alpha", "schedule")] + [
        "lr",
        "batch_size",
    ]
    _mapping(w, key, raw, allowed)
    if not raw:
        w.fail(key, "an empty point (give alpha or schedule, lr, batch_size)")
    overrides: dict[str, Any] = {}
    for suffix, target in slots:
        a_key, s_key = f"alpha{suffix}", f"schedule{suffix}"
        if a_key in raw and s_key in raw:
            w.fail(_join(key, s_key), f"give either {a_key} or {s_key}, not both")
        if a_key in raw:
            alpha = _number(w, _join(key, a_key), raw[a_key], low=0.0, high=1.0)
            overrides[target] = alpha_to_schedule(alpha)
        elif s_key in raw:
            overrides[target] = _schedule(w, _join(key, s_key), raw[s_key])
        elif level == "chain":
            w.fail(_join(key, a_key), f"missing: each chain point needs {a_key} or {s_key}")
    if "lr" in raw:
        overrides["lr"] = _LR.check(w, _join(key, "lr"), raw["lr"])
    if "batch_size" in raw:
        overrides["batch_size"] = _BATCH.check(w, _join(key, "batch_size"), raw["batch_size"])
    return GridPoint(dict(raw), overrides)


def _schedule(w: _Where, key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        w.fail(key, "must be a schedule spec such as 'linear:0.9:0.5'", raw)
    try:
        return parse_schedule(raw).spec
    except KdtuneError as exc:
        w.fail(key, str(exc).removeprefix("schedule: "))


# ---------------------------------------------------------------------------------------------
# Sampler and pruner: a type, options checked against the Optuna constructor


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "none"
    options: dict[str, Any] = field(default_factory=dict)  # patient: wrapped_pruner is a PrunerSpec


def _option_types(annotation: Any) -> set[str] | None:
    """The YAML types an annotation admits (``'int | None'`` -> {int, None}); None if any is not."""
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )
    kinds = set()
    for token in (t.strip() for t in text.split("|")):
        if token in ("bool", "int", "float", "str", "None"):
            kinds.add(token)
        elif token.startswith("dict["):
            kinds.add("dict")
        else:
            return None
    return kinds


def _option_value(w: _Where, key: str, raw: Any, kinds: set[str]) -> Any:
    """Check one option value against the types its constructor parameter admits."""
    if raw is None and "None" in kinds:
        return None
    if isinstance(raw, bool):
        if "bool" in kinds:
            return raw
    elif isinstance(raw, int) and ("int" in kinds or "float" in kinds):
        if "int" not in kinds:
            return _number(w, key, raw)
        return raw
    elif isinstance(raw, float) and "float" in kinds:
        return _number(w, key, raw)
    elif (isinstance(raw, str) and "str" in kinds) or (isinstance(raw, dict) and "dict" in kinds):
        return raw
    names = {"bool": "true or false", "int": "an integer", "float": "a number"}
    names.update({"str": "a string", "None": "null", "dict": "a mapping"})
    w.fail(key, f"must be {' or '.join(sorted(names[k] for k in kinds))}", raw)


def _options(
    w: _Where,
    key: str,
    raw: Any,
    cls: type,
    reserved: dict[str, str],
    nested: dict[str, Callable[[str, Any], Any]] | None = None,
) -> dict[str, Any]:
    """Options validated against ``cls``'s constructor: names, YAML-able types, required ones."""
    if raw is None:
        raw = {}
    params = {
        name: p
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    nested = nested or {}
    settable = [
        n
        for n in params
        if n not in reserved and (n in nested or _option_types(params[n].annotation))
    ]
    if not isinstance(raw, dict):
        w.fail(key, "expected a mapping", raw)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        okey = _join(key, name)
        if not isinstance(name, str):
            w.fail(key, "keys must be strings", name)
        if name in reserved:
            w.fail(okey, reserved[name])
        if name not in params:
            choices = ", ".join(settable) or "none"
            w.fail(okey, f"unknown option for {cls.__name__} (expected one of: {choices})")
        if name in nested:
            out[name] = nested[name](okey, value)
            continue
        kinds = _option_types(params[name].annotation)
        if kinds is None:
            w.fail(
                okey, f"takes a Python object ({params[name].annotation}); not settable from a file"
            )
        out[name] = _option_value(w, okey, value, kinds)
    for name, p in params.items():
        if p.default is p.empty and name not in out and name not in reserved | nested.keys():
            w.fail(_join(key, name), f"missing (required by {cls.__name__})")
    return out


def _construct(w: _Where, key: str, factory: Callable[[], Any]) -> Any:
    """Call an Optuna constructor, turning its complaints into a file error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return factory()
        except (ValueError, TypeError, ArithmeticError) as exc:
            w.fail(key, str(exc).rstrip("."))


def _sampler(w: _Where, raw: Any) -> SamplerSpec:
    if raw is None:
        return SamplerSpec()
    _mapping(w, "sampler", raw, ("type", "seed", "options"))
    kind = _string(w, "sampler.type", raw.get("type", "tpe"), tuple(SAMPLERS))
    seed = raw.get("seed")
    if seed is not None:
        seed = _integer(w, "sampler.seed", seed, low=0, high=2**32 - 1)
    cls = getattr(optuna.samplers, SAMPLERS[kind])
    options = _options(w, "sampler.options", raw.get("options"), cls, _SAMPLER_RESERVED)
    return SamplerSpec(kind, seed, options)


def _pruner(w: _Where, key: str, raw: Any) -> PrunerSpec:
    if raw is None:
        return PrunerSpec()
    _mapping(w, key, raw, ("type", "options"), required=("type",))
    kind = _string(w, _join(key, "type"), raw["type"], tuple(PRUNERS))
    cls = getattr(optuna.pruners, PRUNERS[kind])
    nested: dict[str, Callable[[str, Any], Any]] = {}
    if kind == "patient":
        nested["wrapped_pruner"] = lambda k, v: None if v is None else _pruner(w, k, v)
    options = _options(w, _join(key, "options"), raw.get("options"), cls, {}, nested)
    return PrunerSpec(kind, options)


def _build_sampler(spec: SamplerSpec, grid_size: int) -> optuna.samplers.BaseSampler:
    cls = getattr(optuna.samplers, SAMPLERS[spec.type])
    if spec.type == "grid":
        return cls({"point": list(range(grid_size))}, seed=spec.seed, **spec.options)
    return cls(seed=spec.seed, **spec.options)


def _build_pruner(spec: PrunerSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    cls = getattr(optuna.pruners, PRUNERS[spec.type])
    options = dict(spec.options)
    if spec.type == "patient":
        wrapped = options.get("wrapped_pruner")  # absent or null: patience alone
        options["wrapped_pruner"] = None if wrapped is None else _build_pruner(wrapped, max_epochs)
    if spec.type == "hyperband":
        options.setdefault("max_resource", max_epochs)  # steps are epochs
    return cls(**options)


# ---------------------------------------------------------------------------------------------
# Budget, resources, teacher


@dataclass(frozen=True)
class Budget:
    """How much the search may spend. Optuna steps (what pruners count) are epochs."""

    num_samples: int
    max_epochs: int
    eval_every: int = 1
    max_concurrent: int = 1
    time_limit_s: float | None = None


@dataclass(frozen=True)
class Resources:
    """What one trial reserves from Ray; fractions of a GPU let trials share one."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class TeacherSpec:
    """The level's teacher: a checkpoint, or None for kdtune to train (and cache) one.

    ``recipe`` says how kdtune trains a missing teacher (see ``TrainConfig.teacher_recipe``).
    """

    checkpoint: str | None = None
    epochs: int = 20
    recipe: str = "auto"


def _budget(w: _Where, raw: Any, grid_size: int | None, sampler: str) -> Budget:
    required = ("max_epochs",) if grid_size is not None else ("num_samples", "max_epochs")
    _mapping(
        w,
        "budget",
        raw,
        ("num_samples", "max_epochs", "eval_every", "max_concurrent", "time_limit_s"),
        required,
    )
    if "num_samples" in raw:
        num_samples = _integer(w, "budget.num_samples", raw["num_samples"], high=100_000)
    else:
        assert grid_size is not None
        num_samples = grid_size
    if sampler == "grid" and grid_size is not None and num_samples > grid_size:
        w.fail("budget.num_samples", f"more trials than the {grid_size} grid points", num_samples)
    max_epochs = _integer(w, "budget.max_epochs", raw["max_epochs"], high=100_000)
    eval_every = _integer(w, "budget.eval_every", raw.get("eval_every", 1), high=max_epochs)
    max_concurrent = _integer(w, "budget.max_concurrent", raw.get("max_concurrent", 1), high=10_000)
    limit = raw.get("time_limit_s")
    if limit is not None:
        limit = _number(w, "budget.time_limit_s", limit, low=0.0, low_open=True)
    return Budget(num_samples, max_epochs, eval_every, max_concurrent, limit)


def _resources(w: _Where, raw: Any) -> Resources:
    if raw is None:
        return Resources()
    _mapping(w, "resources", raw, ("cpu", "gpu"))
    cpu = _number(w, "resources.cpu", raw.get("cpu", 1.0), low=0.0, low_open=True, high=4096)
    gpu = _number(w, "resources.gpu", raw.get("gpu", 0.0), low=0.0, high=1024)
    for key, value in (("resources.cpu", cpu), ("resources.gpu", gpu)):
        if 0 < value < 1e-4:
            w.fail(key, "Ray's smallest share is 0.0001", value)
    if gpu > 1 and not gpu.is_integer():
        w.fail("resources.gpu", "a fraction below 1 or a whole number of GPUs", raw.get("gpu"))
    return Resources(cpu, gpu)


def _teacher(w: _Where, raw: Any, base: Path) -> TeacherSpec:
    if raw is None:
        return TeacherSpec()
    _mapping(w, "teacher", raw, ("checkpoint", "epochs", "recipe"))
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None:
        checkpoint = _resolve(base, _string(w, "teacher.checkpoint", checkpoint))
    epochs = _integer(w, "teacher.epochs", raw.get("epochs", TeacherSpec.epochs), high=100_000)
    recipe = _string(w, "teacher.recipe", raw.get("recipe", TeacherSpec.recipe), TEACHER_RECIPES)
    return TeacherSpec(checkpoint, epochs, recipe)


def _resolve(base: Path, text: str) -> str:
    """``~`` and ``$VARS`` expanded; a relative path taken from the space file's folder."""
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return str(path if path.is_absolute() else (base / path).resolve())


# ---------------------------------------------------------------------------------------------
# The train block: fixed TrainConfig keys


def _train(w: _Where, raw: Any, controlled: set[str]) -> dict[str, Any]:
    """The fixed TrainConfig settings, checked key by key so that errors name ``train.KEY``."""
    if raw is None:
        return {}
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    allowed = [n for n in names if n not in _TRAIN_RESERVED] + ["alpha", "alpha_second"]
    if not isinstance(raw, dict):
        w.fail("train", "expected a mapping", raw)
    for key, value in raw.items():
        if isinstance(key, str) and key in _TRAIN_RESERVED:
            w.fail(f"train.{key}", f"set by {_TRAIN_RESERVED[key]}, not in train")
        _mapping(w, "train", {key: value}, allowed)
        target = {"alpha": "schedule", "alpha_second": "schedule_second"}.get(key, key)
        if target in controlled:
            w.fail(f"train.{key}", "is searched (under search:), so it cannot be fixed here")
        _train_value(w, key, value)
    return dict(raw)


def _train_value(w: _Where, key: str, value: Any) -> None:
    if key in ("schedule", "schedule_second"):  # checked even where the level does not use it
        _schedule(w, f"train.{key}", value)
    marker = "\x00"
    try:
        TrainConfig.from_dict({key: value}, where=marker)
    except KdtuneError as exc:
        message = str(exc).removeprefix(f"{marker}: ").removeprefix(f"{key}: ")
        w.fail(f"train.{key}", message, *(() if "got" in message else (value,)))
    except (ArithmeticError, ValueError, TypeError) as exc:
        w.fail(f"train.{key}", f"invalid value ({type(exc).__name__})", value)


def _config(w: _Where, key: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A validated full TrainConfig dict."""
    try:
        return TrainConfig.from_dict(raw, where=f"{w.file}: {key}").to_dict()
    except (ArithmeticError, ValueError, TypeError) as exc:
        w.fail(key, f"invalid configuration ({type(exc).__name__}: {exc})")


# ---------------------------------------------------------------------------------------------
# The space


_SLOTS: dict[str, tuple[str, str]] = {  # search key -> (parameter suffix, TrainConfig key)
    "weighting": ("", "schedule"),
    "weighting_first": ("_first", "schedule"),
    "weighting_second": ("_second", "schedule_second"),
}


@dataclass
class SearchSpace:
    """A parsed, validated search-space file."""

    name: str
    level: str
    data: str
    metric: str
    mode: str
    sampler: SamplerSpec
    pruner: PrunerSpec
    budget: Budget
    resources: Resources
    teacher: TeacherSpec
    train: dict[str, Any]
    weightings: dict[str, Weighting]  # keyed by search key: weighting | weighting_first/_second
    lr: Dimension | None = None
    batch_size: Dimension | None = None
    grid: tuple[GridPoint, ...] = ()
    file: str = "<string>"
    source_text: str = ""

    @property
    def num_trials(self) -> int:
        return self.budget.num_samples

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one trial (define-by-run) and return its TrainConfig overrides."""
        if self.grid:
            index = trial.suggest_categorical("point", list(range(len(self.grid))))
            return dict(self.grid[int(index)].overrides)
        overrides: dict[str, Any] = {}
        for key, weighting in self.weightings.items():
            suffix, target = _SLOTS[key]
            overrides[target] = weighting.suggest(trial, suffix)
        if self.lr is not None:
            overrides["lr"] = float(self.lr.suggest(trial, "lr"))
        if self.batch_size is not None:
            overrides["batch_size"] = int(self.batch_size.suggest(trial, "batch_size"))
        return overrides

    def trial_config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full, validated TrainConfig dict of a trial with these overrides."""
        raw = self._base_config()
        raw.update(overrides or {})
        return _config(_Where(self.file), "trial", raw)

    def _base_config(self) -> dict[str, Any]:
        """The fixed settings of every trial, before any overrides."""
        raw = dict(self.train)
        raw.update(
            level=self.level,
            data=self.data,
            epochs=self.budget.max_epochs,
            eval_every=self.budget.eval_every,
            teacher_checkpoint=self.teacher.checkpoint,
            teacher_epochs=self.teacher.epochs,
            teacher_recipe=self.teacher.recipe,
        )
        return raw


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; relative paths in it resolve from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KdtuneError(f"{path}: no such search-space file") from None
    except IsADirectoryError:
        raise KdtuneError(f"{path}: is a folder, not a search-space file") from None
    except UnicodeDecodeError as exc:
        raise KdtuneError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise KdtuneError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_space(text, file=path, base_dir=path.resolve().parent)


def parse_space(
    text: str, *, file: str | Path = "<string>", base_dir: str | Path | None = None
) -> SearchSpace:
    """Validate search-space YAML text; ``file`` names it in errors, ``base_dir`` anchors paths."""
    w = _Where(str(file))
    raw = _yaml(w, text)
    if raw is None:
        w.fail("", "empty file (expected a mapping with level, budget and search)")
    _mapping(w, "", raw, _TOP_KEYS, required=("level", "budget", "search"))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    default_name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(file)).stem).lstrip("._-") or "search"
    name = raw.get("name", default_name[:100])
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        w.fail(
            "name", "letters, digits, '.', '_' or '-' (at most 100), used as a folder name", name
        )
    level = _string(w, "level", raw["level"], SPACE_LEVELS)
    data = _string(w, "data", raw.get("data", "synthetic"))
    data = data if data == "synthetic" else _resolve(base, data)
    metric = _string(w, "metric", raw.get("metric", "val/ap"), METRICS)
    default_mode = "min" if metric.endswith("loss") else "max"
    mode = _string(w, "mode", raw.get("mode", default_mode), ("max", "min"))
    sampler = _sampler(w, raw.get("sampler"))
    pruner = _pruner(w, "pruner", raw.get("pruner"))
    weightings, lr, batch, grid = _search(w, raw["search"], level, sampler.type)
    budget = _budget(w, raw["budget"], len(grid) if grid else None, sampler.type)
    space = SearchSpace(
        name=name,
        level=level,
        data=data,
        metric=metric,
        mode=mode,
        sampler=sampler,
        pruner=pruner,
        budget=budget,
        resources=_resources(w, raw.get("resources")),
        teacher=_teacher(w, raw.get("teacher"), base),
        train=_train(w, raw.get("train"), _controlled(weightings, lr, batch)),
        weightings=weightings,
        lr=lr,
        batch_size=batch,
        grid=grid,
        file=str(file),
        source_text=text,
    )
    _construct(w, "sampler.options", lambda: _build_sampler(sampler, len(grid)))
    _construct(w, "pruner.options", lambda: _build_pruner(pruner, budget.max_epochs))
    _check_trials(w, space)
    return space


# The safe loader (libyaml's when present): plain data only, no Python objects from tags.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(w: _Where, text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused; any parse failure is a file error."""
    if not isinstance(text, str):
        w.fail("", "expected YAML text", text)
    loader = None
    try:  # what yaml.safe_load does, with a look at the node tree between the two steps
        loader = _SAFE_LOADER(text)
        node = loader.get_single_node()
        duplicate = _duplicate_key(node, "", set()) if node is not None else None
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        w.fail("", f"not valid YAML: {exc.problem or exc.context}{where}")
    except RecursionError:
        w.fail("", "not valid YAML: nested too deeply")
    except Exception as exc:  # the YAML reader's other complaints (bad characters, ...)
        w.fail("", f"not valid YAML: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    if duplicate is not None:
        key, line = duplicate
        w.fail(key, f"duplicate key (again at line {line})")
    return data


def _duplicate_key(node: yaml.Node, path: str, seen: set[int]) -> tuple[str, int] | None:
    """The first key written twice in one mapping, as (key path, line), else None."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            label = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in keys:
                    return _join(path, label), key_node.start_mark.line + 1
                keys.add(ident)
            found = _duplicate_key(value_node, _join(path, label), seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}[{i}]", seen)
            if found:
                return found
    return None


def _search(
    w: _Where, raw: Any, level: str, sampler: str
) -> tuple[dict[str, Weighting], Dimension | None, Dimension | None, tuple[GridPoint, ...]]:
    slots = ("weighting_first", "weighting_second") if level == "chain" else ("weighting",)
    other = ("weighting",) if level == "chain" else ("weighting_first", "weighting_second")
    _mapping(w, "search", raw, (*slots, *other, "lr", "batch_size", "grid"))
    for key in other:
        if key in raw:
            w.fail(f"search.{key}", f"level {level} searches {' and '.join(slots)}")
    if "grid" in raw:
        for key in raw:
            if key != "grid":
                w.fail(f"search.{key}", "not allowed beside search.grid: set it in each point")
        return {}, None, None, _grid(w, "search.grid", raw["grid"], level)
    if sampler == "grid":
        w.fail("sampler.type", "the grid sampler needs an explicit list of points in search.grid")
    if level == "chain":
        for key in slots:
            if key not in raw:
                w.fail(f"search.{key}", "missing: a chain searches both levels' weightings")
    weightings = {key: _weighting(w, f"search.{key}", raw[key]) for key in slots if key in raw}
    lr = _dimension(w, "search.lr", raw["lr"], _LR) if "lr" in raw else None
    batch = (
        _dimension(w, "search.batch_size", raw["batch_size"], _BATCH)
        if "batch_size" in raw
        else None
    )
    if not weightings and lr is None and batch is None:
        w.fail("search", "nothing to search: give weighting, lr, batch_size or grid")
    return weightings, lr, batch, ()


def _controlled(weightings: dict[str, Weighting], lr: Any, batch: Any) -> set[str]:
    """TrainConfig keys that the search sets on every trial."""
    keys = {_SLOTS[k][1] for k in weightings}
    keys |= {"lr"} if lr is not None else set()
    keys |= {"batch_size"} if batch is not None else set()
    return keys


def _check_trials(w: _Where, space: SearchSpace) -> None:
    """The fixed settings must form a valid TrainConfig, and so must every grid point."""
    base = space._base_config()
    _config(w, "train", base)
    for i, point in enumerate(space.grid):
        _config(w, f"search.grid[{i}]", {**base, **point.overrides})


# ---------------------------------------------------------------------------------------------
# Public helpers


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the file asks for (a grid sampler walks the ``point`` index)."""
    w = _Where(space.file)
    package = _PACKAGES.get(space.sampler.type)
    if package is not None and importlib.util.find_spec(package) is None:
        w.fail(
            "sampler.type",
            f"{space.sampler.type} needs the {package!r} package (pip install {package})",
        )
    sampler: optuna.samplers.BaseSampler = _construct(
        w, "sampler.options", lambda: _build_sampler(space.sampler, len(space.grid))
    )
    return sampler


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The Optuna pruner the file asks for; its steps are epochs."""
    pruner: optuna.pruners.BasePruner = _construct(
        _Where(space.file),
        "pruner.options",
        lambda: _build_pruner(space.pruner, space.budget.max_epochs),
    )
    return pruner


def check_paths(space: SearchSpace) -> None:
    """Raise if the data folder or the teacher checkpoint named by the file does not exist."""
    w = _Where(space.file)
    if space.data != "synthetic" and not Path(space.data).is_dir():
        w.fail("data", "no such folder", space.data)
    if space.teacher.checkpoint is not None and not Path(space.teacher.checkpoint).is_file():
        w.fail("teacher.checkpoint", "no such file", space.teacher.checkpoint)


def _format_options(options: dict[str, Any]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, PrunerSpec):
            inner = _format_options(value.options)
            parts.append(f"{key}={value.type}" + (f"({inner})" if inner else ""))
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def describe(space: SearchSpace) -> str:
    """A readable multi-line summary of the space, for ``--dry-run``."""
    b, r, s, p = space.budget, space.resources, space.sampler, space.pruner
    seed = f", seed {s.seed}" if s.seed is not None else ", no seed"
    sampler = s.type + seed + (f", {_format_options(s.options)}" if s.options else "")
    pruner = p.type + (f", {_format_options(p.options)}" if p.options else "")
    if p.type == "hyperband" and "max_resource" not in p.options:
        pruner += f", max_resource={b.max_epochs} (max_epochs)"
    limit = f", time limit {b.time_limit_s:g} s" if b.time_limit_s else ""
    t = space.teacher
    trained = f"trained by kdtune ({t.recipe} recipe, {t.epochs} epochs, cached)"
    teacher = {
        "auto": f"kdtune's shipped teacher where it fits, else trained ({t.epochs} epochs, cached)",
        "shipped": "kdtune's shipped teacher",
    }.get(t.recipe, trained)
    if t.checkpoint:
        teacher = f"checkpoint {t.checkpoint}"
    lines = [
        f"search space {space.name!r}  ({space.file})",
        f"  level      {LEVEL_TEXT[space.level]}",
        f"  data       {space.data}",
        f"  metric     {space.metric} ({space.mode})",
        f"  sampler    {sampler}",
        f"  pruner     {pruner}" + ("   (steps are epochs)" if p.type != "none" else ""),
        f"  budget     {b.num_samples} trials x up to {b.max_epochs} epochs, "
        f"evaluated every {b.eval_every}, {b.max_concurrent} at a time{limit}",
        f"  resources  {r.cpu:g} CPU, {r.gpu:g} GPU per trial",
        f"  teacher    {teacher}",
    ]
    if space.train:
        fixed = ", ".join(f"{k}={v}" for k, v in space.train.items())
        lines.append(f"  train      {fixed}")
    lines += _describe_dimensions(space)
    lines.append(
        f"  trials     {b.num_samples} (at most {b.num_samples * b.max_epochs} epochs in all)"
    )
    return "\n".join(lines)


def _describe_dimensions(space: SearchSpace) -> list[str]:
    if space.grid:
        how = "each once" if space.sampler.type == "grid" else f"sampled by {space.sampler.type}"
        lines = [f"  grid       {len(space.grid)} points ({how}), parameter 'point':"]
        width = max(len(point.label()) for point in space.grid)
        for i, point in enumerate(space.grid):
            sched = point.overrides.get("schedule")
            weight = f"   {parse_schedule(sched).describe()}" if sched else ""
            lines.append(f"    {i:>3}  {point.label():<{width}}{weight}".rstrip())
        return lines
    lines = ["  dimensions"]
    for key, weighting in space.weightings.items():
        lines.append(f"    {key}:")
        lines += [f"      {line}" for line in weighting.describe_lines(_SLOTS[key][0])]
    if space.lr is not None:
        lines.append(f"    lr {space.lr.describe()}")
    if space.batch_size is not None:
        lines.append(f"    batch_size {space.batch_size.describe()}")
    return lines
