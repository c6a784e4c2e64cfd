"""What a run's teacher is, besides its weights: the net at the student's grid, the bank of its
maps, and a search's teacher made ready on the driver before any trial. (Which checkpoint a
run's teacher is, and the teacher kdtune trains itself, is :mod:`kdtune.teachers.source`.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from kdtune.bank import BankSpec, TeacherBank, open_or_build
from kdtune.config import TEACHER_OF, TrainConfig
from kdtune.data import PoseSet
from kdtune.data.sources import data_fingerprint
from kdtune.models import AtInputSize, settle_teacher_input_size, weights_digest
from kdtune.paths import cache_dir
from kdtune.teachers.source import Fit, resolve


def teacher_at_grid(teacher: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``teacher`` fed ``teacher_input_size`` images, its maps brought to the student's grid."""
    return AtInputSize(teacher, teacher_input(cfg), cfg.input_size // cfg.stride)


def teacher_input(cfg: TrainConfig) -> int:
    """The teacher's input size: as settled against its checkpoint
    (:func:`kdtune.models.settle_teacher_input_size`); an unsettled ``auto`` (a net in memory,
    no checkpoint to read) is kdtune's own, the student's ``input_size``."""
    size = cfg.teacher_input_size
    return size if isinstance(size, int) else cfg.input_size


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
        teacher_input_size=teacher_input(cfg),
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


def prepare_for_search(
    base: TrainConfig,
    splits: dict[str, PoseSet],
    results: Path | None,
    log: Callable[[str], None],
    *,
    fit: Fit,
) -> float | None:
    """A search's teacher, settled on the driver once before any trial: resolved (trained if
    need be), its bank built (bank mode) so that every trial reads the same memory-mapped bank,
    and its val AP measured. None for a level without an outside teacher's maps to compare."""
    from kdtune.models import load_checkpoint
    from kdtune.predict import evaluate_model, pick_device

    # a chain's only outside teacher is its first level's: its med teaches the second level
    cfg = replace(base, level="first" if base.level == "chain" else base.level)
    path = resolve(cfg, results, log, fit=fit)
    if path is None:
        return None
    cfg = settle_teacher_input_size(cfg, path)
    device = pick_device(cfg.device)
    arch = TEACHER_OF[cfg.level]
    assert arch is not None, cfg.level
    net = teacher_at_grid(load_checkpoint(path, arch), cfg).to(device).eval()
    if cfg.teacher_targets == "bank":
        open_bank(cfg, net, splits["train"], device, results, log)
    if base.level == "chain":  # the chain's students are judged at the second level
        return None
    val = splits[base.val_split]
    ap = evaluate_model(net, val, cfg, device)["val/ap"]
    log(f"teacher: val AP {ap:.3f} on {len(val)} {base.val_split} images")
    return ap
