"""How a search looks on the terminal: the live progress table and the final summary.

Pure presentation over :mod:`kdtune.results` records (rich, no Ray), so the CLI and the tests
can use it without starting anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from kdtune.results import COMPLETE, FAILED, PRUNED, RUNNING, SearchResult, TrialRecord

_STATE_STYLE = {COMPLETE: "green", PRUNED: "yellow", FAILED: "red", RUNNING: "cyan"}


@dataclass
class Progress:
    """A snapshot of a running search, for the live view."""

    name: str
    metric: str
    counts: dict[str, int]  # trials per state (complete, pruned, failed, running)
    num_samples: int
    best_value: float | None
    best_trial: str | None
    elapsed_s: float
    eta_s: float | None
    epochs_done: int
    epochs_budget: int

    @property
    def waiting(self) -> int:
        """Trials not started yet."""
        return max(0, self.num_samples - sum(self.counts.values()))


def estimate_eta(elapsed_s: float, epochs_done: int, epochs_left: int) -> float | None:
    """Seconds left, from the pace of the epochs run so far; None before any epoch."""
    if epochs_done <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s / epochs_done * max(0, epochs_left)


def format_seconds(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(max(0.0, seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_table(p: Progress) -> Table:
    """The live view: counts per state, the best value so far, time and epochs."""
    table = Table(title=f"kdtune search {p.name!r}", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    counts = ", ".join(
        f"[{_STATE_STYLE[s]}]{p.counts.get(s, 0)} {s}[/]"
        for s in (RUNNING, COMPLETE, PRUNED, FAILED)
    )
    table.add_row("trials", f"{counts}, {p.waiting} waiting (of {p.num_samples})")
    best = "-" if p.best_value is None else f"{p.best_value:.4f} (trial {p.best_trial})"
    table.add_row(f"best {p.metric}", best)
    table.add_row("epochs", f"{p.epochs_done} run (budget at most {p.epochs_budget})")
    table.add_row(
        "time", f"{format_seconds(p.elapsed_s)} elapsed, about {format_seconds(p.eta_s)} left"
    )
    return table


def format_params(params: dict[str, Any]) -> str:
    """``alpha=0.3, lr=0.002``: the sampled parameters, short."""
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items())


def summary_table(result: SearchResult) -> Table:
    """One row per trial, best first: number, state, parameters, value (final), epochs, node."""
    table = Table(title=f"search {result.name!r}: {_count_line(result)}")
    for name, justify in (
        ("#", "right"),
        ("trial", "left"),
        ("state", "left"),
        ("weighting (β)", "left"),
        (f"{result.metric} (final)", "right"),
        ("epochs", "right"),
        ("node", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    best = result.best
    for t in sorted(result.trials, key=lambda t: _sort_key(t, result)):
        value = t.value(result.metric)
        state = t.state + (" (diverged)" if t.diverged else "")
        mark = " *" if best is not None and t.trial_id == best.trial_id else ""
        table.add_row(
            "" if t.number is None else str(t.number),
            t.trial_id + mark,
            f"[{_STATE_STYLE.get(t.state, 'white')}]{state}[/]",
            _weighting(t.config),
            "-" if value is None else f"{value:.4f}",
            str(t.epochs_run),
            t.node or "-",
        )
    return table


def format_best(result: SearchResult) -> str:
    """The best complete trial: its value, parameters and β schedule(s), or why there is none."""
    best = result.best
    if best is None:
        return f"no trial completed with a {result.metric} value ({_count_line(result)})"
    value = best.value(result.metric)
    lines = [
        f"best trial {best.trial_id} (optuna #{best.number}): {result.metric} = {value:.4f} "
        f"after {best.epochs_run} epochs",
    ]
    if best.params:
        lines.append(f"  parameters  {format_params(best.params)}")
    for key in ("schedule", "schedule_second"):
        if key in best.config and (key == "schedule" or best.config.get("level") == "chain"):
            lines.append(f"  {key:<11} {best.config[key]}")
    if best.checkpoint_dir:
        lines.append(f"  checkpoint  {best.checkpoint_dir}")
    return "\n".join(lines)


def format_confirmation(result: SearchResult) -> str:
    """The confirmation stage's ranking (mean ± standard error over its seeds) and the paired
    verdict; without one, a plain statement that the best trial is unconfirmed."""
    verdict = result.verdict
    if verdict is None:
        if result.best is None:
            return ""
        return (
            "unconfirmed: the best trial ran with one training seed and was chosen on the same "
            "images; add `confirm: {top_k: 3, seeds: 3}` to the space for a verdict"
        )
    lines = ["confirmation (further seeds; mean ± standard error of final val AP):"]
    width = max(len(r["schedule"]) for r in verdict["ranking"])
    for rank, r in enumerate(verdict["ranking"], start=1):
        values = ", ".join(f"{v:.3f}" for v in r["values"].values())
        lines.append(
            f"  {rank}. {r['schedule']:<{width}}  {r['mean']:.4f} ± {r['se']:.4f}  ({values})"
        )
    if result.withheld:
        lines.append(f"no recommendation: {result.withheld}")
    else:
        lines.append(f"recommendation: {verdict['recommended']}")
    lines += [f"verdict: {c['sentence']}" for c in verdict["comparisons"]]
    if not verdict["comparisons"]:
        lines.append(f"verdict: {verdict['sentence']}")
    return "\n".join(lines)


def _weighting(config: dict[str, Any]) -> str:
    """The trial's β schedule(s): ``fixed:0.75``, or ``first → second`` for a chain."""
    if config.get("level") == "chain":
        return f"{config.get('schedule', '?')} → {config.get('schedule_second', '?')}"
    return str(config.get("schedule", "?"))


def _count_line(result: SearchResult) -> str:
    counts = result.counts()
    return ", ".join(f"{counts[s]} {s}" for s in (COMPLETE, PRUNED, FAILED, RUNNING) if counts[s])


def _sort_key(t: TrialRecord, result: SearchResult) -> tuple[int, float]:
    order = {COMPLETE: 0, PRUNED: 1, RUNNING: 2, FAILED: 3}.get(t.state, 4)
    value = t.value(result.metric)
    sign = -1.0 if result.mode == "max" else 1.0
    return order, sign * value if value is not None else math.inf


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
