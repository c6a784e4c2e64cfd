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
    """One row per trial, best first: number, state, weighting in words, value (final), epochs,
    node. Without a confirmed answer the single-seed best is marked ``*`` (unconfirmed); with
    one, no trial is marked: the answer above the table is the confirmation's."""
    from kdtune.answer import UNCONFIRMED, block_of, trial_weighting

    confirmed = block_of(result) is not None
    caption = "α: the ground-truth weight, β: the teacher's (α + β = 1)"
    if not confirmed:
        caption += f"; * the single-seed best ({UNCONFIRMED})"
    if any(t.repeat_of is not None for t in result.trials):
        caption += "; = #N: trial N's weighting and seed again, answered from its run, not trained"
    table = Table(title=f"search {result.name!r}: {_count_line(result)}", caption=caption)
    for name, justify in (
        ("#", "right"),
        ("trial", "left"),
        ("state", "left"),
        ("weighting", "left"),
        (f"{result.metric} (final)", "right"),
        ("epochs", "right"),
        ("node", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name == "weighting")  # type: ignore[arg-type]
    best = None if confirmed else result.best
    for t in sorted(result.trials, key=lambda t: _sort_key(t, result)):
        value = t.value(result.metric)
        state = t.state + (" (diverged)" if t.diverged else "")
        mark = " *" if best is not None and t.trial_id == best.trial_id else ""
        table.add_row(
            "" if t.number is None else str(t.number),
            (t.trial_id if t.repeat_of is None else f"= #{t.repeat_of}") + mark,
            f"[{_STATE_STYLE.get(t.state, 'white')}]{state}[/]",
            trial_weighting(t.config),
            "-" if value is None else f"{value:.4f}",
            str(t.epochs_run),
            t.node or "-",
        )
    return table


def format_answer(result: SearchResult) -> str:
    """What the summary leads with: the search's answer (:func:`kdtune.answer.answer_text`: the
    confirmation's block, else the single-seed best marked unconfirmed, with its parameters and
    checkpoint)."""
    from kdtune.answer import answer_text, block_of

    lines = ["answer:", *(f"  {line}" for line in answer_text(result).splitlines())]
    best = result.best
    if block_of(result) is None and best is not None:
        if best.params:
            lines.append(f"  parameters  {format_params(best.params)}")
        if best.checkpoint_dir:
            lines.append(f"  checkpoint  {best.checkpoint_dir}")
    return "\n".join(lines)


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
