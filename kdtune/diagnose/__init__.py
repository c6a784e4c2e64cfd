"""Diagnose a trial from its curves, and say which weighting the tuning guidance would try next.

The package's face, re-exporting the public names of its modules:

- :mod:`~kdtune.diagnose.thresholds`: :class:`Thresholds`, every number the tests compare
  against, with their valid ranges.
- :mod:`~kdtune.diagnose.measures`: a trial's history read and its curves measured.
- :mod:`~kdtune.diagnose.guidance`: the guidance table :data:`GUIDANCE` (one
  :class:`DiagnosisKind` per diagnosis, its test function beside it) and :func:`next_schedules`.
- :mod:`~kdtune.diagnose.trial`: one trial's :class:`Diagnosis`, :func:`diagnose` and
  :func:`diagnose_trial`.
- :mod:`~kdtune.diagnose.report`: the search report, :func:`search_report`.
"""

from __future__ import annotations

from kdtune.diagnose.guidance import (
    ADAPTIVE,
    DIRECTIONS,
    EARLY_BETA,
    GRID,
    GUIDANCE,
    LABELS,
    MORE_DISTILLATION,
    MORE_GROUND_TRUTH,
    OVERFIT_ALPHA_MOVES,
    PLATEAU_SCHEDULES,
    UNDERFIT_ALPHA_MOVES,
    DiagnosisKind,
    Moves,
    Test,
    mean_beta,
    next_schedules,
)
from kdtune.diagnose.measures import LOSS_KEYS, Point
from kdtune.diagnose.report import SearchReport, TrialSummary, search_report
from kdtune.diagnose.thresholds import DEFAULT_THRESHOLDS, Thresholds
from kdtune.diagnose.trial import Diagnosis, diagnose, diagnose_trial

__all__ = [
    "ADAPTIVE",
    "DEFAULT_THRESHOLDS",
    "DIRECTIONS",
    "EARLY_BETA",
    "GRID",
    "GUIDANCE",
    "LABELS",
    "LOSS_KEYS",
    "MORE_DISTILLATION",
    "MORE_GROUND_TRUTH",
    "OVERFIT_ALPHA_MOVES",
    "PLATEAU_SCHEDULES",
    "UNDERFIT_ALPHA_MOVES",
    "Diagnosis",
    "DiagnosisKind",
    "Moves",
    "Point",
    "SearchReport",
    "Test",
    "Thresholds",
    "TrialSummary",
    "diagnose",
    "diagnose_trial",
    "mean_beta",
    "next_schedules",
    "search_report",
]
