"""What a run's teacher is, besides its weights: the net at the student's grid, the bank of its
maps, and the training run and cache key of a teacher kdtune trains itself."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from kdtune.bank import BankSpec, TeacherBank, open_or_build
from kdtune.config import REFERENCE_ALPHA, TEACHER_OF, TrainConfig
from kdtune.data import PoseSet
from kdtune.data.sources import data_fingerprint
from kdtune.models import AtInputSize, weights_digest
from kdtune.paths import cache_dir


def teacher_at_grid(teacher: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``teacher`` fed ``teacher_input_size`` images, its maps brought to the student's grid."""
    return AtInputSize(teacher, cfg.teacher_input_size, cfg.input_size // cfg.stride)


def bank_spec(cfg: TrainConfig, images: int, teacher: str = "", data: str = "") -> BankSpec:
    """What a bank for ``cfg``'s training split of ``images`` images is built from: the
    teacher's weights digest and the data's fingerprint (both left empty where only the views
    are wanted: they do not depend on either)."""
    return BankSpec(
        teacher=teacher,
        data=data,
        split="train",
        images=images,
        views=cfg.teacher_views,
        aug_scale=tuple(cfg.aug_scale),  # type: ignore[arg-type]
        aug_rotate=cfg.aug_rotate,
        aug_flip=cfg.aug_flip,
        input_size=cfg.input_size,
        teacher_input_size=cfg.teacher_input_size,
        stride=cfg.stride,
        amp=cfg.amp,
    )


def open_bank(
    cfg: TrainConfig,
    teacher: nn.Module,
    train: PoseSet,
    device: torch.device,
    results: Path | None,
    log: Callable[[str], None],
) -> TeacherBank:
    """The bank of ``teacher`` (already at the student's grid) for ``cfg``'s training images:
    ``cfg.teacher_bank`` if given (checked to fit), else found or built in the cache."""
    spec = bank_spec(cfg, len(train), weights_digest(teacher), data_fingerprint(cfg.data))
    if cfg.teacher_bank:
        return TeacherBank(Path(cfg.teacher_bank)).check(spec)
    return open_or_build(teacher, train, spec, cache_dir(results), device=device, log=log)


# What does not shape a teacher's weights: where and how fast it runs, what it is evaluated on.
_NOT_SHAPING = (
    "device",
    "num_threads",
    "eval_every",
    "decoder",
    "max_val_images",
    "val_split",
    "extra",
    "schedule_second",
    "teacher_bank",
)


def teacher_training_config(cfg: TrainConfig) -> TrainConfig:
    """The run kdtune trains as ``cfg``'s teacher when none is given or shipped."""
    arch = TEACHER_OF[cfg.level]
    if cfg.level == "first" or cfg.teacher_recipe == "ground_truth":
        level, schedule = ("teacher", "fixed:0") if arch == "teacher" else ("first", "fixed:0")
    else:  # the reference: med distilled from a Lightweight-OpenPose teacher at alpha 0.3
        level, schedule = "first", f"fixed:{1 - REFERENCE_ALPHA['first']:g}"
    return replace(
        cfg,
        level=level,
        schedule=schedule,
        epochs=cfg.teacher_epochs,
        teacher_checkpoint=None,
        teacher_bank=None,
        eval_every=cfg.teacher_epochs,
        # on the ground truth alone a teacher learns from fresh views at every step
        teacher_targets="live" if schedule == "fixed:0" else cfg.teacher_targets,
    )


def teacher_key(cfg: TrainConfig, results: Path | None) -> str:
    """A short hash of everything that shapes the teacher kdtune would train for ``cfg``: its
    whole training config (lr, seed, weight decay, augmentation, amp, sizes, recipe, targets ...)
    and the data's fingerprint."""
    del results  # the data is named by its fingerprint, not by where it is cached

    teacher_cfg = teacher_training_config(cfg)
    parts = {k: v for k, v in teacher_cfg.to_dict().items() if k not in _NOT_SHAPING}
    parts["arch"] = TEACHER_OF[cfg.level]
    parts["data"] = data_fingerprint(cfg.data)
    parts["version"] = 2
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
