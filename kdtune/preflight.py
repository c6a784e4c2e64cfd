"""What a search needs before its first trial, as ``kdtune search --dry-run`` says it.

:func:`check` refuses, in one line, what would fail later: a COCO root without the train or
validation split's annotations or images, a teacher checkpoint that does not exist, a
``teacher_input_size`` that contradicts the checkpoint. :func:`plan_lines` says what the search
would do first: the held-out carve its trials leave out, the input size the teacher is fed,
any net kdtune would train before the trials (a teacher, a med) with its estimated time, and
the disk its data caches and teacher banks will take.

Time estimates come from a measured rate, and say which: a net of the same kind that kdtune
already trained under this results folder (its summary's images per second), else a few
training steps of the net measured now, on this machine (the net's forward and backward only:
targets and augmentation add to it, so the estimate is a lower bound).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdtune.config import TEACHER_INPUT_AUTO, TEACHER_OF, TrainConfig
from kdtune.errors import KdtuneError

VIEW_CHANNELS = 19 + 38  # heatmaps and PAFs a bank stores per view, float16
MEASURED_STEPS = 2  # training steps timed for a rate measured now


def check(space: Any) -> None:
    """Refuse (one line) a data root missing a split the search reads, and a teacher checkpoint
    whose input size the space's ``teacher_input_size`` contradicts."""
    from kdtune.data.coco import annotation_file, image_dir
    from kdtune.data.sources import parse_data

    base = TrainConfig.from_dict(space.trial_config(), where=space.file)
    if parse_data(base.data) is None:
        root = Path(base.data)
        for split in ("train", base.val_split):
            ann, images = annotation_file(root, split), image_dir(root, split)
            if not ann.is_file():
                raise KdtuneError(f"{space.file}: data: annotation file {ann} not found")
            if not images.is_dir():
                raise KdtuneError(f"{space.file}: data: image folder {images} not found")
    if base.teacher_checkpoint:
        from kdtune.models import settle_teacher_input_size

        try:
            settle_teacher_input_size(base, base.teacher_checkpoint)
        except KdtuneError as exc:
            raise KdtuneError(f"{space.file}: train.{exc}") from None


@dataclass
class _Training:
    """A net kdtune would train before the trials."""

    arch: str
    cfg: TrainConfig
    images: int | None


def plan_lines(space: Any, results: Path | None = None) -> list[str]:
    """The dry-run's lines on what the search does before its trials (see the module)."""
    from kdtune.data.sources import HOLDOUT_SEED
    from kdtune.paths import results_dir

    root = results_dir(results)
    base = TrainConfig.from_dict(space.trial_config(), where=space.file)
    counts = _image_counts(base, root)
    lines: list[str] = []
    if base.holdout_fraction:
        held = counts.get("held")
        size = f": {held} images" if held is not None else ""
        lines.append(
            f"  held out   {base.holdout_fraction:g} of train{size} (seed {HOLDOUT_SEED}), never "
            "trained on: export's held-out check judges there"
        )
    if base.teacher_checkpoint:
        from kdtune.models import settle_teacher_input_size, trained_input_size

        _, what = trained_input_size(base.teacher_checkpoint)
        how = "auto" if base.teacher_input_size == TEACHER_INPUT_AUTO else "given"
        fed = settle_teacher_input_size(base, base.teacher_checkpoint).teacher_input_size
        lines.append(f"  input      the teacher is fed {fed}×{fed} ({how}; its checkpoint: {what})")
    first = _trained_first(base, root, counts.get("train"))
    if not first:
        lines.append("  before     nothing to train first: the teacher is given, shipped or cached")
    for run in first:
        lines.append(f"  before     kdtune trains {_training_line(run, root)}")
    lines.append(f"  disk       {_disk_line(base, first, counts)}")
    return lines


# ----------------------------------------------------------------------------- what is trained


def _trained_first(base: TrainConfig, root: Path, images: int | None) -> list[_Training]:
    """The nets kdtune would train before the trials, in order (none where the teacher is
    given, shipped and fitting, or already cached)."""
    from kdtune.teachers.shipped import shipped_teacher
    from kdtune.teachers.source import teacher_key, teacher_training_config

    cfg = replace(base, level="first") if base.level == "chain" else base
    arch = TEACHER_OF.get(cfg.level)
    if arch is None or cfg.teacher_checkpoint:
        return []
    if cfg.teacher_recipe in ("auto", "shipped") and shipped_teacher(arch, cfg)[0] is not None:
        return []
    cached = root / "cache" / "teachers" / f"{arch}-{teacher_key(cfg, root)}" / "model.pt"
    if cached.is_file():
        return []
    teacher_cfg = teacher_training_config(cfg)
    before = [] if teacher_cfg.level == "teacher" else _trained_first(teacher_cfg, root, images)
    limit = teacher_cfg.max_train_images
    count = images if images is None or limit is None else min(images, limit)
    return [*before, _Training(arch, teacher_cfg, count)]


def _training_line(run: _Training, root: Path) -> str:
    cfg = run.cfg
    what = f"a {run.arch} net ({cfg.level} level, {cfg.epochs} epochs"
    if run.images is None:
        return what + "; its data is written on first use, so no estimate yet)"
    rate, source = _rate(run.arch, cfg, root)
    seconds = run.images * cfg.epochs / rate
    return (
        f"{what} on {run.images} images): about {_duration(seconds)} at {rate:.0f} img/s ({source})"
    )


def _rate(arch: str, cfg: TrainConfig, root: Path) -> tuple[float, str]:
    """Training images per second for ``arch``: measured by an earlier run under ``root``, else
    measured now (a few steps of the net alone)."""
    for summary in sorted((root / "cache" / "teachers").glob("*/run/summary.json")):
        try:
            record = json.loads(summary.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rate = record.get("images_per_s")
        if record.get("arch") == arch and isinstance(rate, int | float) and rate > 0:
            return float(rate), f"measured by {summary.parent} on this results folder's machine"
    return _measure(arch, cfg)


def _measure(arch: str, cfg: TrainConfig) -> tuple[float, str]:
    """A few training steps of ``arch`` on random batches, timed on this machine."""
    import torch

    from kdtune.models import build_model
    from kdtune.predict import pick_device

    device = pick_device(cfg.device)
    batch = min(cfg.batch_size, 8)
    net = build_model(arch).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, cfg.input_size, cfg.input_size, device=device) - 0.5

    def step() -> None:
        optimizer.zero_grad()
        loss = sum((h.square().mean() + p.square().mean()) for h, p in net(x))
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(MEASURED_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = batch * MEASURED_STEPS / (time.perf_counter() - start)
    return rate, (
        f"measured now: {MEASURED_STEPS} steps of batch {batch} on this machine's {device.type}, "
        "the net alone: a lower bound"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------- disk


def _image_counts(cfg: TrainConfig, root: Path) -> dict[str, int]:
    """Images the search decodes: ``train`` (less the carve, capped), ``val`` (capped) and
    ``held`` (the carve); empty where the data is a source not written yet."""
    from kdtune.data.sources import parse_data

    spec = parse_data(cfg.data)
    data_root = Path(cfg.data) if spec is None else root / "cache" / spec.folder
    counts: dict[str, int] = {}
    for split in ("train", cfg.val_split):
        ann = data_root / "annotations" / f"person_keypoints_{split}2017.json"
        if not ann.is_file():
            return {}
        try:
            n = len(json.loads(ann.read_bytes()).get("images", []))
        except (json.JSONDecodeError, AttributeError):
            raise KdtuneError(f"data: {ann} is not a COCO annotation file") from None
        if split == "train" and cfg.holdout_fraction:
            held = min(max(1, round(cfg.holdout_fraction * n)), n - 1)
            counts["held"] = held
            n -= held
        limit = cfg.max_train_images if split == "train" else cfg.max_val_images
        counts["train" if split == "train" else "val"] = n if limit is None else min(n, limit)
    return counts


def _disk_line(cfg: TrainConfig, first: list[_Training], counts: dict[str, int]) -> str:
    if not counts:
        return "the data is written on first use: sizes known then"
    side = cfg.input_size
    per_image = 4 * side * side  # uint8 RGB image and ignore mask, letterboxed
    decoded = sum(counts.values()) * per_image
    grid = cfg.input_size // cfg.stride
    per_view = VIEW_CHANNELS * grid * grid * 2
    banks = 0
    count = 0
    runs = [*(run.cfg for run in first), cfg]
    if cfg.level == "chain":  # a bank for each of its two levels
        runs[-1:] = [replace(cfg, level="first"), replace(cfg, level="second")]
    for run in runs:
        needs = run.level != "teacher" and run.schedule != "fixed:0"
        if needs and run.teacher_targets == "bank":
            banks += counts["train"] * run.teacher_views * per_view
            count += 1
    what = f"data caches {_size(decoded)} ({sum(counts.values())} images at {side}×{side})"
    if banks:
        what += (
            f", {count} teacher bank{'s' if count > 1 else ''} {_size(banks)} "
            f"({counts['train']} images × {cfg.teacher_views} views × {per_view / 1e3:.0f} KB"
            f"{' each' if count > 1 else ''})"
        )
    return what + f": about {_size(decoded + banks)} under the results' cache/"


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
