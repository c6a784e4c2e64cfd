"""``kdtune compare``: the trials of one or more searches, read back from MLflow, as a table
(text, CSV, JSON or Markdown) and as plots of AP against the weighting."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError
from kdtune.schedules import parse_schedule, words

if TYPE_CHECKING:
    import pandas as pd

FORMATS: tuple[str, ...] = ("table", "csv", "json", "markdown")
# What the table and Markdown show; CSV and JSON carry every column.
DISPLAY_COLUMNS: tuple[str, ...] = (
    "search",
    "trial",
    "level",
    "weighting",
    "epochs_run",
    "state",
    "stage",
    "seed",
    "val_ap",
    "diagnosis",
)
_DECIMALS: dict[str, str] = {"alpha": "{:.3g}", "val_ap": "{:.3f}"}


def compare_frame(
    uri: str,
    searches: Sequence[str] | None = None,
    sort_by: str = "val_ap",
    ascending: bool = False,
) -> pd.DataFrame:
    """The trials of ``searches`` (default: all) sorted by a column; missing values last."""
    from kdtune.tracking import TRIAL_COLUMNS, load_trials

    if sort_by not in TRIAL_COLUMNS:
        raise KdtuneError(
            f"sort: unknown column {sort_by!r} (choose from {', '.join(TRIAL_COLUMNS)})"
        )
    frame = load_trials(uri, searches)
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def render(df: pd.DataFrame, fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    """The frame as ``table`` (aligned text), ``csv``, ``json`` (a list of records, missing
    values as null) or ``markdown``. Table and Markdown show :data:`DISPLAY_COLUMNS` unless
    ``columns`` is given; CSV and JSON carry every column. Every format has ``weighting``, the
    schedule in words (α and β spelled out) beside ``schedule``, the spec (the machine key)."""
    if fmt not in FORMATS:
        raise KdtuneError(f"format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if "schedule" in df.columns and "weighting" not in df.columns:
        df = df.copy()
        df.insert(
            list(df.columns).index("schedule"), "weighting", list(map(_words, df["schedule"]))
        )
    if columns is None:
        wanted = DISPLAY_COLUMNS if fmt in ("table", "markdown") else tuple(df.columns)
        columns = [c for c in wanted if c in df.columns]
    else:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise KdtuneError(f"columns: unknown column {missing[0]!r}")
    view = df.loc[:, list(columns)]
    if fmt == "csv":
        return str(view.to_csv(index=False))
    if fmt == "json":
        records = [{k: _plain(v) for k, v in row.items()} for row in view.to_dict("records")]
        return json.dumps(records, indent=2)
    cells = [
        [_cell(c, v) for c, v in zip(view.columns, row, strict=True)]
        for row in view.itertuples(index=False)
    ]
    numeric = [_is_numeric(view[c]) for c in view.columns]
    if fmt == "markdown":
        return _markdown(list(view.columns), cells, numeric)
    return _text_table(list(view.columns), cells, numeric)


def answers_text(answers: dict[str, str]) -> str:
    """Each search's answer, as its summary shows it (:mod:`kdtune.answer`), under the table."""
    out = []
    for name, text in answers.items():
        out.append(f"\nanswer ({name}):")
        out += [f"  {line}" for line in text.splitlines()]
    return "\n".join(out)


def _words(schedule: Any) -> str:
    """A trial's schedule cell in words (a chain's ``first -> second``: both levels)."""
    if not isinstance(schedule, str) or not schedule:
        return ""
    parts = [words(part.strip()) for part in schedule.split(" -> ")]
    return parts[0] if len(parts) == 1 else f"first level {parts[0]}, second level {parts[1]}"


def _text_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    if not rows:
        return "  ".join(header) + "\n(no trials)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _markdown(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if num else "---" for num in numeric]
    return "\n".join([line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)])


def _cell(column: str, value: Any) -> str:
    if _missing(value):
        return "-"
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        return _DECIMALS.get(column, "{:.4g}").format(float(value))
    return str(value)


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: NaN / NA → None, numpy numbers → Python numbers."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _missing(value: Any) -> bool:
    import pandas as pd

    if value is None or value is pd.NA:
        return True
    return isinstance(value, numbers.Real) and not math.isfinite(float(value))


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


# ---------------------------------------------------------------------------------- plots


def plot_comparison(df: pd.DataFrame, path: str | Path) -> Path:
    """AP against α (fixed-ratio trials) and against β_start / β_end (adaptive schedules)
    in one PNG. Chain trials (two schedules) and trials without an AP are left out."""
    from kdtune import plots

    fixed: list[dict[str, Any]] = []
    adaptive: list[dict[str, Any]] = []
    for row in df.to_dict("records"):
        point = _plot_point(row)
        if point is not None:
            (fixed if point["shape"] == "fixed" else adaptive).append(point)
    out = Path(path)
    try:
        return plots.ap_comparison(fixed, adaptive, out, title=_plot_title(df))
    except OSError as exc:
        raise KdtuneError(f"plot: cannot write {out}: {exc.strerror or exc}") from None


def _plot_point(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("level") == "chain" or _missing(row.get("val_ap")):
        return None
    try:
        sched = parse_schedule(str(row.get("schedule", "")))
    except KdtuneError:
        return None
    return {
        "group": str(row.get("search", "")),
        "state": row.get("state"),
        "val_ap": float(row["val_ap"]),
        "shape": sched.shape,
        "alpha": 1.0 - sched.beta_start if sched.shape == "fixed" else math.nan,
        "beta_start": sched.beta_start,
        "beta_end": sched.beta_end,
    }


def _plot_title(df: pd.DataFrame) -> str:
    searches = sorted({str(s) for s in df.get("search", [])})
    names = ", ".join(searches) if searches else "no searches"
    return f"final validation AP against the weighting ({names})"
