"""Teachers: the ones kdtune ships for its synthetic default (:mod:`.shipped`), and what a run's
teacher is besides its weights (:mod:`.runs`): the net at the student's grid, its bank, and
the training run and cache key of one kdtune trains itself. ``kdtune.train`` finds or trains
the teacher of a run with these."""

from __future__ import annotations

from kdtune.teachers.runs import (
    bank_spec,
    open_bank,
    teacher_at_grid,
    teacher_key,
    teacher_training_config,
)
from kdtune.teachers.shipped import (
    FIT_KEYS,
    HERE,
    annotations_digest,
    manifest,
    manifest_path,
    shipped_teacher,
    weights_path,
)

__all__ = [
    "FIT_KEYS",
    "HERE",
    "annotations_digest",
    "bank_spec",
    "manifest",
    "manifest_path",
    "open_bank",
    "shipped_teacher",
    "teacher_at_grid",
    "teacher_key",
    "teacher_training_config",
    "weights_path",
]
