"""Teachers: which one a run learns from (:mod:`.source`: given, shipped or trained and cached,
settled before the run trains), the ones kdtune ships for its synthetic default
(:mod:`.shipped`) and how they are packed and listed (:mod:`.pack`), and what a run's teacher is
besides its weights (:mod:`.runs`: the net at the student's grid, its bank, a search's teacher
made ready).

This face re-exports the names that import no torch (``kdtune.api`` re-exports ``pack``'s at
its top); import :mod:`.runs` by its own path."""

from __future__ import annotations

from kdtune.teachers.pack import list_teachers, pack_teacher
from kdtune.teachers.shipped import (
    FIT_KEYS,
    HERE,
    annotations_digest,
    manifest,
    manifest_path,
    shipped_teacher,
    weights_path,
)
from kdtune.teachers.source import (
    Fit,
    resolve,
    teacher_key,
    teacher_training_config,
    trained_teacher,
)

__all__ = [
    "FIT_KEYS",
    "HERE",
    "Fit",
    "annotations_digest",
    "list_teachers",
    "manifest",
    "manifest_path",
    "pack_teacher",
    "resolve",
    "shipped_teacher",
    "teacher_key",
    "teacher_training_config",
    "trained_teacher",
    "weights_path",
]
