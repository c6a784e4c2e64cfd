"""A run's checkpoints: what one holds (weights, optimizer, learning-rate schedule, epoch,
history, config and RNG states), written atomically, kept few, and restored for ``resume``.

A checkpoint directory ``checkpoints/epoch_NNNN`` holds ``state.pt`` beside ``config.json`` and
``metrics.json``, and whatever else the run adds to it before it appears (``extras``: the
validation drawing, the final detections); it is written under a temporary name and renamed, so
a killed run never leaves half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from kdtune.config import TrainConfig
from kdtune.errors import KdtuneError, disk_full, is_disk_full
from kdtune.paths import file_digest, manifest_mismatch

CHECKPOINT_FILE = "state.pt"
MANIFEST = "manifest.json"  # state.pt's size and SHA-256, checked when it is restored
KEEP_CHECKPOINTS = 2
History = list[dict[str, float]]


@dataclass
class Trainee:
    """What a checkpoint saves and restores: the net and everything that moves it."""

    arch: str
    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    # an exponential moving average of the weights (``ema_decay`` > 0): then it is the net
    # that is evaluated and saved as ``model``, and the trained weights go under ``trained``
    ema: AveragedModel | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The net a run evaluates and delivers: the moving average where it keeps one."""
        return self.model if self.ema is None else self.ema.module

    def state(self, epoch: int, history: History) -> dict[str, Any]:
        ema = {}
        if self.ema is not None:
            ema = {
                "trained": self.model.state_dict(),
                "ema_n_averaged": self.ema.n_averaged.clone(),
            }
        return {
            "arch": self.arch,
            "model": self.evaluated.state_dict(),
            **ema,
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "epoch": epoch,
            "history": history,
            "config": self.cfg.to_dict(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
        }


def write(
    trainee: Trainee,
    root: Path,
    epoch: int,
    history: History,
    extras: Callable[[Path], None] = lambda _dir: None,
) -> Path:
    """Checkpoint ``epoch`` under ``root`` (the newest :data:`KEEP_CHECKPOINTS` kept)."""
    ckpt = root / f"epoch_{epoch:04d}"
    tmp = root / f".epoch_{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save(trainee.state(epoch, history), tmp / CHECKPOINT_FILE)
        (tmp / "config.json").write_text(json.dumps(trainee.cfg.to_dict(), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(history, indent=2))
        extras(tmp)
        _write_manifest(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(
                f"the checkpoint of epoch {epoch}", root, "the run's earlier checkpoints are kept"
            ) from None
        raise
    shutil.rmtree(ckpt, ignore_errors=True)
    os.replace(tmp, ckpt)
    for old in sorted(p for p in root.glob("epoch_*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def _write_manifest(folder: Path) -> None:
    state = folder / CHECKPOINT_FILE
    meta = {"file": CHECKPOINT_FILE, "bytes": state.stat().st_size, "sha256": file_digest(state)}
    (folder / MANIFEST).write_text(json.dumps(meta, indent=2))


def damage(file: Path) -> str | None:
    """What is wrong with checkpoint ``file`` (a ``state.pt``) against the manifest beside it,
    in words; None when it matches (or has no manifest: a checkpoint made before them)."""
    manifest = file.parent / MANIFEST
    if not manifest.is_file():
        return None
    return manifest_mismatch(file, manifest)


def restore(trainee: Trainee, path: Path, device: torch.device) -> tuple[History, int]:
    """Load checkpoint ``path`` (a directory or its ``state.pt``) into ``trainee``; returns the
    history so far and the epoch to continue at."""
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise KdtuneError(f"resume: no checkpoint at {file}")
    problem = damage(file)
    if problem is not None:
        raise KdtuneError(
            f"resume: checkpoint {file} is damaged ({problem}); it is not trained on: "
            "resume from an earlier checkpoint, or start the run again"
        )
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise KdtuneError(
            f"resume: {file} is not a kdtune checkpoint ({type(exc).__name__})"
        ) from None
    if state.get("arch") != trainee.arch:
        raise KdtuneError(
            f"resume: {file} holds a {state.get('arch')!r} net, this run trains {trainee.arch!r}"
        )
    if trainee.ema is not None:
        if "trained" not in state:
            raise KdtuneError(
                f"resume: {file} was written without a moving average of the weights, this run "
                "keeps one (ema_decay): resume with the ema_decay it was trained with"
            )
        trainee.model.load_state_dict(state["trained"])
        trainee.ema.module.load_state_dict(state["model"])
        trainee.ema.n_averaged.copy_(state["ema_n_averaged"])
    elif "trained" in state:
        raise KdtuneError(
            f"resume: {file} keeps a moving average of the weights (ema_decay), this run does "
            "not: resume with the ema_decay it was trained with"
        )
    else:
        trainee.model.load_state_dict(state["model"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.lr_schedule.load_state_dict(state["lr_schedule"])
    rng = state["rng"]
    trainee.generator.set_state(host_rng_state(rng["generator"]))
    torch.set_rng_state(host_rng_state(rng["torch"]))
    return list(state["history"]), int(state["epoch"]) + 1


def save_final(trainee: Trainee, epoch: int, history: History, path: Path) -> None:
    """The final ``model.pt``: ``torch.save`` to a temporary file, then rename, so a killed
    save never leaves a truncated file under ``path`` (a teacher's becomes the teacher cache)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(trainee.state(epoch, history), tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(
                "the final model", path, f"any earlier {path.name} there is left as it was"
            ) from None
        raise
    os.replace(tmp, path)


def host_rng_state(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as ``Generator.set_state`` and ``torch.set_rng_state`` take it: a CPU byte
    tensor, wherever the checkpoint was mapped (``map_location`` CUDA puts it on the GPU)."""
    return state.to(device="cpu", dtype=torch.uint8)
