"""PNG figures of a trial's learning curves and of a search's AP against the weighting.

matplotlib runs on the Agg backend (no display needed); every function writes one PNG and
returns its path. Metric names are the shared vocabulary (``train/loss``, ``val/ap``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kdtune.checks import is_finite

LOSS_CURVES: tuple[str, ...] = (
    "train/loss",
    "train/student_loss",
    "train/distill_loss",
    "val/loss",
)
AP_CURVES: tuple[str, ...] = ("val/ap", "val/ap50", "val/ap75", "val/ar")
BETA_CURVE = "train/beta"
STATE_MARKERS: dict[str, str] = {"complete": "o", "pruned": "x", "failed": "v", "running": "s"}


def learning_curves(
    history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Losses, AP figures and β(t) against the epoch, in three panels of one PNG."""
    fig, (ax_loss, ax_ap, ax_beta) = plt.subplots(1, 3, figsize=(13, 3.8))
    _draw_curves(ax_loss, history, LOSS_CURVES, "loss", log_scale=True)
    _draw_curves(ax_ap, history, AP_CURVES, "validation AP / AR")
    _draw_curves(ax_beta, history, (BETA_CURVE,), "β (distillation weight)")
    ax_beta.set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _draw_curves(
    ax: Axes,
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    ylabel: str,
    *,
    log_scale: bool = False,
) -> None:
    drawn = 0
    lowest = math.inf
    for key in keys:
        points = [
            (float(row["epoch"]), float(row[key]))
            for row in history
            if is_finite(row.get("epoch")) and is_finite(row.get(key))
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=".", label=key)
            lowest = min(lowest, *ys)
            drawn += 1
    if drawn and log_scale and lowest > 0:
        ax.set_yscale("log")
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def ap_comparison(
    fixed: Sequence[Mapping[str, Any]],
    adaptive: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """AP against α (fixed-ratio trials) and against β_start / β_end (adaptive trials).

    Each point is a mapping with ``val_ap``, ``state``, a ``group`` label (the search, one
    colour each) and ``alpha`` (fixed) or ``beta_start`` / ``beta_end`` / ``shape`` (adaptive).
    Pruned trials get an ``x`` marker; trials without an AP are left out.
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    groups = sorted({str(p.get("group", "")) for p in [*fixed, *adaptive]})
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    _scatter(axes[0], fixed, "alpha", colours, "α (ground-truth weight), fixed ratio")
    _scatter(axes[1], adaptive, "beta_start", colours, "β_start (adaptive schedules)")
    _scatter(axes[2], adaptive, "beta_end", colours, "β_end (adaptive schedules)")
    axes[0].set_ylabel("validation AP (final)")
    handles = [
        plt.Line2D([], [], color=c, marker="o", linestyle="", label=g or "trials")
        for g, c in colours.items()
    ]
    handles += [
        plt.Line2D([], [], color="grey", marker=m, linestyle="", label=s)
        for s, m in STATE_MARKERS.items()
        if any(p.get("state") == s for p in [*fixed, *adaptive])
    ]
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize="small")
    fig.suptitle(title or "final validation AP against the weighting")
    return _save(fig, path, right=0.89 if handles else 1.0)


def _scatter(
    ax: Axes,
    points: Sequence[Mapping[str, Any]],
    key: str,
    colours: Mapping[str, str],
    xlabel: str,
) -> None:
    shown = [p for p in points if is_finite(p.get(key)) and is_finite(p.get("val_ap"))]
    for p in shown:
        ax.scatter(
            float(p[key]),
            float(p["val_ap"]),
            color=colours.get(str(p.get("group", "")), "C0"),
            marker=STATE_MARKERS.get(str(p.get("state")), "o"),
        )
    if not shown:
        ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: str | Path, right: float = 1.0) -> Path:
    """Write the figure as a PNG (``right`` < 1 leaves room for a figure legend)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0.0, 0.0, right, 1.0))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
