"""Where a training step's augmented views and teacher maps come from (``teacher_targets``).

One small interface, :class:`TeacherTargets`, chosen once when a run sets up (:func:`open_targets`):

- ``bank``: every image has K fixed views, the same for every trial of a search (α = 1
  included, so that trials differ only in their weighting); the teacher's maps of each view are
  read from the memory-mapped bank (:mod:`kdtune.bank`).
- ``live``: a fresh view per step; the teacher runs on it.
- ``warped`` (approximate): a fresh view per step; the teacher's maps of the un-augmented image,
  computed once, warped with the view.

The teacher level (and any run at α = 1 outside bank mode) trains on fresh views with no teacher
maps at all: :class:`FreshViews`, the base of ``live`` and ``warped``.

Each epoch the loop calls :meth:`TeacherTargets.new_epoch` once (it draws that epoch's views
from the run's generator, in the order a checkpoint's RNG state expects), then, per step,
:meth:`TeacherTargets.views` for the step's transforms and, where β > 0,
:meth:`TeacherTargets.maps` for the teacher's maps of the augmented images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdtune.augment import Affine, AugmentParams, sample_affine, warp_maps
from kdtune.bank import TeacherBank, run_teacher, source_maps, view_affines
from kdtune.config import TEACHER_OF, TrainConfig
from kdtune.data import PoseSet
from kdtune.models import load_checkpoint, weights_digest
from kdtune.paths import cache_dir
from kdtune.teachers.runs import bank_spec, open_bank, teacher_at_grid

Maps = tuple[torch.Tensor, torch.Tensor]  # the teacher's (heatmaps, PAFs) at the student's grid


class TeacherTargets(ABC):
    """A run's views and teacher maps; see the module's docstring."""

    @abstractmethod
    def new_epoch(self, n: int, generator: torch.Generator) -> None:
        """Draw this epoch's views of the ``n`` training images."""

    @abstractmethod
    def views(self, idx: torch.Tensor, first: int) -> Affine:
        """The transforms of images ``idx``, the step starting at position ``first`` of the
        epoch's order."""

    def maps(self, idx: torch.Tensor, x: torch.Tensor, affine: Affine) -> Maps | None:
        """The teacher's maps of the augmented images ``x`` (images ``idx`` under ``affine``),
        or None where this run has no teacher."""
        del idx, x, affine
        return None


class FreshViews(TeacherTargets):
    """A fresh random view of every image each epoch, drawn at once so no step waits on it."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.aug = AugmentParams(scale=cfg.aug_scale, rotate=cfg.aug_rotate, flip=cfg.aug_flip)
        self.drawn: Affine | None = None

    def new_epoch(self, n: int, generator: torch.Generator) -> None:
        self.drawn = sample_affine(n, self.aug, generator, self.device, self.cfg.input_size)

    def views(self, idx: torch.Tensor, first: int) -> Affine:
        assert self.drawn is not None, "new_epoch first"
        return self.drawn[first : first + int(idx.numel())]


class LiveTeacher(FreshViews):
    """``live``: the teacher run on each step's augmented images."""

    def __init__(self, cfg: TrainConfig, device: torch.device, teacher: nn.Module) -> None:
        super().__init__(cfg, device)
        self.teacher = teacher

    def maps(self, idx: torch.Tensor, x: torch.Tensor, affine: Affine) -> Maps | None:
        cfg = self.cfg
        return run_teacher(self.teacher, x, cfg.input_size // cfg.stride, cfg.amp)


class WarpedTeacher(FreshViews):
    """``warped``: the teacher's maps of each un-augmented image, warped with its view."""

    def __init__(
        self, cfg: TrainConfig, device: torch.device, heat: torch.Tensor, paf: torch.Tensor
    ):
        super().__init__(cfg, device)
        self.heat, self.paf = heat, paf

    def maps(self, idx: torch.Tensor, x: torch.Tensor, affine: Affine) -> Maps | None:
        heat, paf = self.heat[idx].float(), self.paf[idx].float()
        return warp_maps(heat, paf, affine, self.cfg.input_size)


class BankViews(TeacherTargets):
    """``bank``: one of each image's K fixed views per epoch, and the bank's maps of it (no bank:
    an α = 1 run, which trains on the same views as its distilled rivals)."""

    def __init__(
        self, cfg: TrainConfig, device: torch.device, images: int, bank: TeacherBank | None
    ) -> None:
        table = view_affines(bank_spec(cfg, images))  # the same numbers as a bank stores
        self.table = Affine(table.matrix.to(device), table.flipped.to(device), table.input_size)
        self.cfg, self.device, self.bank = cfg, device, bank
        self.drawn: torch.Tensor | None = None

    def new_epoch(self, n: int, generator: torch.Generator) -> None:
        self.drawn = torch.randint(self.cfg.teacher_views, (n,), generator=generator).to(
            self.device
        )

    def views(self, idx: torch.Tensor, first: int) -> Affine:
        assert self.drawn is not None, "new_epoch first"
        return self.table[idx * self.cfg.teacher_views + self.drawn[idx]]

    def maps(self, idx: torch.Tensor, x: torch.Tensor, affine: Affine) -> Maps | None:
        if self.bank is None:
            return None
        assert self.drawn is not None, "new_epoch first"
        return self.bank.maps(idx, self.drawn[idx], self.device)


def open_targets(
    cfg: TrainConfig,
    teacher: Path | None,
    train: PoseSet,
    device: torch.device,
    results: Path | None,
    log: Callable[[str], None],
) -> TeacherTargets:
    """The targets of run ``cfg``, whose teacher checkpoint ``teacher`` was resolved before
    (:func:`kdtune.teachers.resolve`; None: the run needs no teacher's maps)."""
    if cfg.level == "teacher":
        return FreshViews(cfg, device)  # the teacher level learns from the ground truth
    if teacher is None:
        return (
            BankViews(cfg, device, len(train), None)
            if cfg.teacher_targets == "bank"
            else (FreshViews(cfg, device))
        )
    arch = TEACHER_OF[cfg.level]
    assert arch is not None, cfg.level
    net = teacher_at_grid(load_checkpoint(teacher, arch), cfg)
    net = net.to(device).eval()
    if cfg.teacher_targets == "bank":
        bank = open_bank(cfg, net, train, device, results, log)
        if bank.resident_on(device):
            log(f"teacher bank copied into {device} memory")
        return BankViews(cfg, device, len(train), bank)
    if cfg.teacher_targets == "live":
        return LiveTeacher(cfg, device, net)
    heat, paf = source_maps(
        net,
        train,
        key=[weights_digest(net), cfg.input_size, cfg.teacher_input_size, cfg.stride],
        device=device,
        cache=cache_dir(results),
    )
    return WarpedTeacher(cfg, device, heat, paf)
