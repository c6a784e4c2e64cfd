"""Generic checks of plain values read from a file: mappings, numbers, integers, strings, flags.

Each check returns the value (a number as ``float``) or raises :class:`~kdtune.errors.KdtuneError`
with one line that names where the value came from and shows it:
``space.yaml: budget.max_epochs: must be an integer, got 2.5``. Where a value came from is a
:class:`Where`: a source (a file name, or empty) and a key path inside it.

Pure Python: no third-party imports, so any module may use it.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from kdtune.errors import KdtuneError

__all__ = [
    "MISSING",
    "Where",
    "boolean",
    "integer",
    "is_finite",
    "is_number",
    "join",
    "mapping",
    "number",
    "show",
    "string",
]

MISSING: Any = object()  # "no value to show" (None is a value)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 6, 60, 60


def is_number(value: Any) -> bool:
    """A real number (numpy's included), not a bool: what a metric value may be."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A real number, not a bool, neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def show(value: Any) -> str:
    """A short one-line repr of a (possibly huge or self-referencing) value."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails is still worth an error message
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def join(path: str, key: Any) -> str:
    """``path.key``, or ``key`` alone at the top."""
    return f"{path}.{key}" if path else str(key)


@dataclass(frozen=True)
class Where:
    """Where a value came from: ``source`` (a file name) and ``key`` (``a.b[2].c``), each
    optional."""

    source: str = ""
    key: str = ""

    def at(self, key: Any) -> Where:
        """The place of ``key`` (or a dotted key path) inside this one."""
        return Where(self.source, join(self.key, key))

    def item(self, index: int) -> Where:
        """The place of item ``index`` of the list here."""
        return Where(self.source, f"{self.key}[{index}]")

    @property
    def label(self) -> str:
        """``source: key``, either part left out when empty."""
        return ": ".join(part for part in (self.source, self.key) if part)

    def fail(self, message: str, value: Any = MISSING) -> NoReturn:
        """Raise a one-line KdtuneError here; ``value``, when given, is shown after ``got``."""
        text = ": ".join(part for part in (self.label, message) if part)
        if value is not MISSING:
            text += f", got {show(value)}"
        raise KdtuneError(" ".join(text.splitlines()))


def mapping(
    value: Any,
    where: Where,
    allowed: Sequence[str] | None = None,
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """``value`` as a mapping with string keys, all among ``allowed`` (when given), and every
    ``required`` key. A mapping at the top of a document is named ``(top level)``."""
    here = where if where.key else Where(where.source, "(top level)")
    if not isinstance(value, dict):
        here.fail("expected a mapping", value)
    for key in value:
        if not isinstance(key, str):
            here.fail("keys must be strings", key)
        if allowed is not None and key not in allowed:
            where.at(key).fail(f"unknown key (expected one of: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            where.at(key).fail("missing (required)")
    return value


def number(
    value: Any,
    where: Where,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (not a bool) within the given bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.fail("must be a number", value)
    try:
        result = float(value)
    except OverflowError:
        where.fail("number too large", value)
    if not math.isfinite(result):
        where.fail("must be a finite number", value)
    too_low = result <= low if low_open else result < low
    too_high = result >= high if high_open else result > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        where.fail(f"must be in {left}{low:g}, {high:g}{right}", value)
    return result


def integer(value: Any, where: Where, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) in ``[low, high]``; either bound may be left open."""
    if isinstance(value, bool) or not isinstance(value, int):
        where.fail("must be an integer", value)
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bound = f"between {low} and {high}"
        else:
            bound = f"at least {low}" if low is not None else f"at most {high}"
        where.fail(f"must be {bound}", value)
    return value


def string(value: Any, where: Where, choices: Sequence[str] | None = None) -> str:
    """A non-empty (not blank) string, one of ``choices`` when given."""
    if not isinstance(value, str) or not value.strip():
        where.fail("must be a non-empty string", value)
    if choices is not None and value not in choices:
        where.fail(f"must be one of: {', '.join(choices)}", value)
    return value


def boolean(value: Any, where: Where) -> bool:
    """``true`` or ``false`` (not 0 or 1)."""
    if not isinstance(value, bool):
        where.fail("must be true or false", value)
    return value
