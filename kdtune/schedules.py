"""β schedules: how the distillation weight moves over training progress.

A schedule is written as a short spec, the same in YAML, on the command line and in MLflow::

    fixed:0.75                     β = 0.75 throughout (α = 0.25)
    linear:0.9:0.5                 β from 0.9 to 0.5, linearly in progress
    cosine:0.9:0.5,warmup=0.1      held at 0.9 for the first 10 %, then a cosine to 0.5
    step:0.9:0.5,at=0.5            0.9 until half-way, then 0.5

``progress`` is the fraction of training done, in [0, 1]. α = 1 − β always.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kdtune.errors import KdtuneError

# (q, start, end, options) -> β; options: the shape's own options by name ({'at': 0.5} for a step)
Curve = Callable[[float, float, float, Mapping[str, float]], float]


@dataclass(frozen=True)
class Shape:
    """One shape of β schedule, everything about it in one record.

    ``curve(q, start, end, options)`` is β at progress ``q`` in [0, 1] after any warm-up, given
    the schedule's values of the shape's options by name;
    ``options`` are the spec options it takes besides ``warmup`` (``step`` also takes ``at``),
    which are also its extra search-space dimensions and MLflow params; ``adaptive`` shapes are
    the ones a search space's ``adaptive`` block may list (``fixed`` has its own block).
    """

    name: str
    curve: Curve
    options: tuple[str, ...] = ()
    adaptive: bool = True


def _cosine(q: float, start: float, end: float, _options: Mapping[str, float]) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * q))


SHAPE_TABLE: tuple[Shape, ...] = (
    Shape("fixed", lambda _q, start, _end, _o: start, adaptive=False),
    Shape("linear", lambda q, start, end, _o: start + (end - start) * q),
    Shape("cosine", _cosine),
    Shape("step", lambda q, start, end, o: start if q < o["at"] else end, options=("at",)),
)
SHAPE_BY_NAME: dict[str, Shape] = {shape.name: shape for shape in SHAPE_TABLE}
SHAPES: tuple[str, ...] = tuple(SHAPE_BY_NAME)
ADAPTIVE_SHAPES: tuple[str, ...] = tuple(s.name for s in SHAPE_TABLE if s.adaptive)
# Every shape-specific option, in table order (``warmup`` belongs to every shape).
SHAPE_OPTIONS: tuple[str, ...] = tuple(dict.fromkeys(o for s in SHAPE_TABLE for o in s.options))


def shapes_taking(option: str) -> tuple[str, ...]:
    """The shapes whose specs take ``option`` (``("step",)`` for ``at``)."""
    return tuple(s.name for s in SHAPE_TABLE if option in s.options)


@dataclass(frozen=True)
class BetaSchedule:
    shape: str
    beta_start: float
    beta_end: float
    warmup: float = 0.0  # fraction of training held at beta_start before the shape begins
    at: float = 0.5  # step only: where (in progress after warm-up) beta jumps to beta_end

    def __call__(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.shape == "fixed" or p < self.warmup:
            return self.beta_start
        q = (p - self.warmup) / (1.0 - self.warmup) if self.warmup < 1.0 else 1.0
        return SHAPE_BY_NAME[self.shape].curve(q, self.beta_start, self.beta_end, self.options)

    @property
    def alpha(self) -> float | None:
        """The ground-truth weight α = 1 − β of a fixed schedule, else None."""
        return round(1.0 - self.beta_start, 10) if self.shape == "fixed" else None

    @property
    def options(self) -> dict[str, float]:
        """The shape's own options with their values (``{"at": 0.5}`` for a step)."""
        return {name: float(getattr(self, name)) for name in SHAPE_BY_NAME[self.shape].options}

    @property
    def spec(self) -> str:
        if self.shape == "fixed":
            return f"fixed:{self.beta_start:g}"
        opts = [f"warmup={self.warmup:g}"] if self.warmup else []
        opts += [f"{name}={value:g}" for name, value in self.options.items()]
        tail = ("," + ",".join(opts)) if opts else ""
        return f"{self.shape}:{self.beta_start:g}:{self.beta_end:g}{tail}"

    def params(self) -> dict[str, float | str]:
        """The schedule as flat parameters (what MLflow logs): shape and α, β for a fixed
        schedule; shape, β start and end, warm-up and the shape's options otherwise."""
        if self.shape == "fixed":
            return {
                "shape": "fixed",
                "alpha": round(1.0 - self.beta_start, 10),
                "beta": self.beta_start,
            }
        return {
            "shape": self.shape,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "warmup": self.warmup,
            **self.options,
        }

    @staticmethod
    def option_default(name: str) -> float:
        """The value a shape option takes when a spec leaves it out."""
        default = BetaSchedule.__dataclass_fields__[name].default
        assert isinstance(default, float), name
        return default

    @property
    def words(self) -> str:
        """The weighting as a person reads it, both weights spelled out: ``α 0.25 / β 0.75``
        for a fixed schedule; ``β 0.9 → 0.5 (linear)`` or ``β 0.9 → 0.5 (step at 0.5,
        warm-up 0.1)`` otherwise (α = 1 − β throughout). The spec stays the machine key."""
        if self.shape == "fixed":
            return f"α {1.0 - self.beta_start:.3g} / β {self.beta_start:.3g}"
        how = self.shape + "".join(f" {name} {value:g}" for name, value in self.options.items())
        if self.warmup:
            how += f", warm-up {self.warmup:g}"
        return f"β {self.beta_start:.3g} → {self.beta_end:.3g} ({how})"

    def describe(self) -> str:
        """A human-readable loss weighting, e.g. ``L = 0.25*student + 0.75*distill``."""
        if self.shape == "fixed":
            return f"L = {1 - self.beta_start:.3g}*student + {self.beta_start:.3g}*distill"
        return f"L = (1-β)*student + β*distill, β: {self.spec}"


def parse_schedule(spec: str) -> BetaSchedule:
    """Parse a schedule spec; anything malformed raises :class:`KdtuneError` naming the problem."""
    if not isinstance(spec, str) or not spec.strip():
        raise KdtuneError(f"schedule: expected a spec such as 'linear:0.9:0.5', got {spec!r}")
    head, _, opts_text = spec.strip().partition(",")
    parts = head.split(":")
    shape = parts[0].strip().lower()
    if shape not in SHAPES:
        raise KdtuneError(
            f"schedule: unknown shape {shape!r} in {spec!r} (choose from {', '.join(SHAPES)})"
        )
    want = 2 if shape == "fixed" else 3
    if len(parts) != want:
        form = "fixed:BETA" if shape == "fixed" else f"{shape}:BETA_START:BETA_END"
        raise KdtuneError(f"schedule: {spec!r} should read {form}")
    values = [_unit(p, "beta", spec) for p in parts[1:]]
    start, end = values[0], values[-1]
    opts: dict[str, float] = {}
    if opts_text:
        for item in opts_text.split(","):
            key, eq, val = item.partition("=")
            key = key.strip()
            known = ("warmup", *SHAPE_OPTIONS)
            if not eq or key not in known:
                raise KdtuneError(
                    f"schedule: unknown option {item.strip()!r} in {spec!r} "
                    f"({', '.join(k + '=' for k in known)})"
                )
            if key != "warmup" and key not in SHAPE_BY_NAME[shape].options:
                owners = shapes_taking(key)
                raise KdtuneError(
                    f"schedule: option {key!r} applies to {'/'.join(owners)} schedules only, "
                    f"in {spec!r}"
                )
            opts[key] = _unit(val, key, spec)
    if shape == "fixed" and opts:
        raise KdtuneError(f"schedule: a fixed schedule takes no options, in {spec!r}")
    if opts.get("warmup", 0.0) >= 1.0:
        raise KdtuneError(f"schedule: warmup must be below 1, in {spec!r}")
    return BetaSchedule(shape, start, end, **opts)  # every option the table allows, as given


def words(spec: str) -> str:
    """:attr:`BetaSchedule.words` of a spec; a spec that does not parse is returned as it is
    (a record written by another version stays readable)."""
    try:
        return parse_schedule(spec).words
    except KdtuneError:
        return spec


def _unit(text: str, name: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KdtuneError(
            f"schedule: {name} {text.strip()!r} is not a number, in {spec!r}"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise KdtuneError(f"schedule: {name} must be in [0, 1], got {text.strip()}, in {spec!r}")
    return value
