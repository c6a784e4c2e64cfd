"""One trial's diagnosis: its measures classified by the guidance table, the reason, the
recommendation, the next β schedules and the evidence."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdtune.diagnose.guidance import LABELS, classify, mean_beta, next_schedules
from kdtune.diagnose.measures import Measures, ap_reference, history_rows, measure
from kdtune.diagnose.thresholds import DEFAULT_THRESHOLDS, Thresholds
from kdtune.errors import KdtuneError
from kdtune.results import COMPLETE, STATES, TrialRecord
from kdtune.schedules import BetaSchedule, parse_schedule


@dataclass
class Diagnosis:
    """One trial's label, why (citing numbers), what to do, and the β schedules to try next."""

    label: str
    reason: str
    recommendation: str
    next_schedules: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Diagnosis:
        """The inverse of :meth:`to_dict` (e.g. across a process boundary)."""
        if not isinstance(raw, Mapping) or raw.get("label") not in LABELS:
            raise KdtuneError(
                f"diagnosis: expected a mapping with a label in {LABELS}, got {raw!r}"
            )
        try:
            evidence = {str(k): float(v) for k, v in dict(raw.get("evidence", {})).items()}
        except (TypeError, ValueError):
            raise KdtuneError(
                f"diagnosis: evidence must map names to numbers, got {raw!r}"
            ) from None
        return cls(
            label=str(raw["label"]),
            reason=str(raw.get("reason", "")),
            recommendation=str(raw.get("recommendation", "")),
            next_schedules=[str(s) for s in raw.get("next_schedules", [])],
            evidence=evidence,
        )


def diagnose(
    history: Sequence[Mapping[str, Any]],
    schedule: str,
    *,
    level: str,
    max_epochs: int | None = None,
    state: str = COMPLETE,
    best_ap_in_search: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    diverged: str | None = None,
) -> Diagnosis:
    """Classify one trial from its per-evaluation metrics (in evaluation order).

    ``schedule`` is the trial's β schedule spec; ``best_ap_in_search`` makes "poor AP"
    relative to the search's best (without any ``val/ap``, high training loss alone means
    underfitting). Missing keys and NaN AP values are skipped; a NaN or infinite loss means
    divergence, and so does ``diverged`` (why a trial that stopped at a non-finite loss did: its
    history ends before it). ``level == "teacher"`` gets no ratio moves (there is no
    distillation). Bad arguments raise :class:`KdtuneError`.
    """
    sched = parse_schedule(schedule)
    _check_args(level, max_epochs, state)
    rows = history_rows(history)
    m = measure(rows, sched, thresholds, state)
    if diverged and not m.nonfinite:  # it stopped at the NaN: its history never shows it
        m.nonfinite = diverged
    ap_ref = ap_reference(best_ap_in_search)
    kind, reason = classify(m, thresholds, ap_ref)
    if kind.label != "failed":  # its reason already says where it stopped
        reason += _budget_note(m, max_epochs, state)
    rec = kind.recommend(sched)
    if level == "teacher":
        moves: list[str] = []
        rec = "no distillation weighting at the teacher level; " + rec
    else:
        moves = next_schedules(kind.label, sched)
        if kind.moves is not None and not moves:
            rec += " (already at the end of the range: no ratio move left)"
    evidence = _evidence(m, sched, max_epochs, best_ap_in_search)
    return Diagnosis(kind.label, reason, rec, moves, evidence)


def _check_args(level: Any, max_epochs: Any, state: Any) -> None:
    if not isinstance(level, str) or not level:
        raise KdtuneError(f"level: expected a level name, got {level!r}")
    if max_epochs is not None and (
        isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1
    ):
        raise KdtuneError(f"max_epochs: must be a positive integer, got {max_epochs!r}")
    if state not in STATES:
        raise KdtuneError(f"state: unknown trial state {state!r} (choose from {', '.join(STATES)})")


def _budget_note(m: Measures, max_epochs: int | None, state: str) -> str:
    if state == COMPLETE:
        return ""
    at = f" at epoch {m.last_epoch:g}" if m.last_epoch is not None else ""
    of = f" of {max_epochs}" if max_epochs is not None and at else ""
    return f" (trial {state}{at}{of})"


def _evidence(
    m: Measures, sched: BetaSchedule, max_epochs: int | None, best_ap_in_search: Any
) -> dict[str, float]:
    beta = mean_beta(sched)
    raw: dict[str, Any] = {
        "evaluations": m.n,
        "last_epoch": m.last_epoch,
        "max_epochs": max_epochs,
        "alpha": 1.0 - beta,
        "beta_mean": beta,
        "train_loss_first": m.loss_first,
        "train_loss_last": m.loss_last,
        "train_loss_ratio": m.loss_ratio,
        "val_loss_min": m.val_min,
        "val_loss_last": m.val_last,
        "val_loss_rise": m.val_rise,
        "val_train_gap": m.gap,
        "train_loss_slope": m.slope,
        "ap_best": m.ap_best,
        "ap_last": m.ap_last,
        "ap_window_range": m.ap_range,
        "best_ap_in_search": ap_reference(best_ap_in_search),
    }
    return {k: float(v) for k, v in raw.items() if v is not None and math.isfinite(v)}


def diagnose_trial(
    record: TrialRecord,
    best_ap_in_search: float | None = None,
    thresholds: Thresholds | None = None,
) -> Diagnosis:
    """Diagnose a search's trial from its record (a chain is judged by its second level, the
    one that reports)."""
    cfg = record.config
    epochs = cfg.get("epochs")
    found = diagnose(
        record.history,
        record.reported_schedule,
        level=str(cfg.get("level", "second")),
        max_epochs=epochs if isinstance(epochs, int) and epochs > 0 else None,
        state=record.state,
        best_ap_in_search=best_ap_in_search,
        thresholds=thresholds or DEFAULT_THRESHOLDS,
        diverged=_divergence(record),
    )
    if found.label == "failed" and record.error:
        found.reason += f"; its error: {_last_line(record.error)}"
    return found


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _divergence(record: TrialRecord) -> str | None:
    """Why a trial diverged, when it stopped at a non-finite loss (its error says it)."""
    if not record.diverged:
        return None
    error = (record.error or "").rsplit(": ", 1)[-1] or "a non-finite loss"
    return f"the trial stopped: {error}"
