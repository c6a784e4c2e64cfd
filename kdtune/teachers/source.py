"""Which teacher a run learns from, as a checkpoint file, settled before the run trains.

In this order: the checkpoint the config names; a teacher kdtune ships, where one fits (recipe
``auto`` or ``shipped``); else one kdtune trains once and caches under
``<results>/cache/teachers``, keyed by everything that shaped it
(:func:`teacher_key`). Training one takes the trial function itself
(``fit``, :func:`kdtune.train.fit`), handed in so that this package sits below ``train``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from kdtune.config import REFERENCE_ALPHA, TEACHER_OF, TrainConfig
from kdtune.errors import KdtuneError, TeacherDiverged, TrialDiverged
from kdtune.paths import cache_dir, file_digest, file_lock, manifest_mismatch
from kdtune.teachers.shipped import manifest, shipped_source, shipped_teacher


class Fit(Protocol):
    """What trains a teacher: :func:`kdtune.train.fit`'s signature, as used here."""

    def __call__(
        self,
        config: TrainConfig,
        report: None,
        *,
        workdir: Path,
        results: Path | None,
        log: Callable[[str], None] | None,
    ) -> dict[str, Any]: ...


def resolve(
    cfg: TrainConfig, results: Path | None, log: Callable[[str], None], *, fit: Fit
) -> Path | None:
    """The checkpoint of ``cfg.level``'s teacher (found, shipped or trained here, in that
    order); None for a level no outside teacher teaches (the teacher level itself)."""
    arch = TEACHER_OF.get(cfg.level)
    if arch is None:
        return None
    if cfg.teacher_checkpoint:
        return Path(cfg.teacher_checkpoint)
    if cfg.teacher_recipe in ("auto", "shipped"):
        path, why = shipped_teacher(arch, cfg)
        if path is not None:
            record = manifest(arch, shipped_source(cfg))
            ap = (record or {}).get("val", {}).get("val/ap", float("nan"))
            log(f"teacher: kdtune's shipped {arch} net for {shipped_source(cfg)} (val AP {ap:.3f})")
            return path
        if cfg.teacher_recipe == "shipped":
            raise KdtuneError(f"teacher_recipe: shipped: {why}")
        log(f"teacher: no shipped one fits ({why}); training one by the reference recipe")
    return trained_teacher(cfg, results, log, fit=fit)


def trained_teacher(
    cfg: TrainConfig, results: Path | None, log: Callable[[str], None], *, fit: Fit
) -> Path:
    """The teacher kdtune trains for ``cfg`` (:func:`teacher_training_config`),
    trained once under a file lock and cached by its key. The cached ``model.pt`` is checked
    against its manifest (``model.json``: size and SHA-256) whenever it is opened; a damaged one
    is said in one line and trained again, never taught from."""
    arch = TEACHER_OF[cfg.level]
    root = cache_dir(results) / "teachers" / f"{arch}-{teacher_key(cfg, results)}"
    model_path = root / "model.pt"
    if model_path.is_file() and teacher_damage(model_path) is None:
        return model_path
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if _cached_ok(model_path, log):  # another process trained it while we waited
            return model_path
        recipe = "ground_truth" if cfg.teacher_recipe == "ground_truth" else "reference"
        log(
            f"training a {arch} net as the teacher ({cfg.teacher_epochs} epochs, "
            f"recipe {recipe}) into {root}"
        )
        work = root / "run"
        teacher_cfg = teacher_training_config(cfg)
        try:
            fit(teacher_cfg, None, workdir=work, results=results, log=log)
        except TrialDiverged as exc:
            raise TeacherDiverged(
                f"teacher: the {arch} net kdtune trains as this run's teacher diverged ({exc}) "
                f"at lr {teacher_cfg.lr:g}: lower `lr` (a space's `train:` block, a run's "
                "config), or give a trained teacher (a space's `teacher: checkpoint:`)"
            ) from None
        os.replace(work / "model.pt", model_path)
        _write_manifest(model_path)
    return model_path


TEACHER_MANIFEST = "model.json"


def _write_manifest(model_path: Path) -> None:
    """``model.json`` beside a cached teacher: its size and digest, written atomically."""
    meta = {"file": model_path.name, "bytes": model_path.stat().st_size}
    meta["sha256"] = file_digest(model_path)
    tmp = model_path.with_name(f".{TEACHER_MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, model_path.with_name(TEACHER_MANIFEST))


def teacher_damage(model_path: Path) -> str | None:
    """What is wrong with a cached teacher against its manifest, in words; None if it is whole
    (a cache made before manifests gets one now, from the file as it is)."""
    manifest_path = model_path.with_name(TEACHER_MANIFEST)
    if not manifest_path.is_file():
        _write_manifest(model_path)
        return None
    return manifest_mismatch(model_path, manifest_path, "manifest")


def _cached_ok(model_path: Path, log: Callable[[str], None]) -> bool:
    """Whether the cached teacher is there and whole; a damaged one is moved aside, in one
    line, so that it is trained again."""
    if not model_path.is_file():
        return False
    problem = teacher_damage(model_path)
    if problem is None:
        return True
    log(f"teacher cache {model_path} is damaged ({problem}): training the teacher again")
    os.replace(model_path, model_path.with_name(f"{model_path.name}.damaged"))
    model_path.with_name(TEACHER_MANIFEST).unlink(missing_ok=True)
    return False


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
    from kdtune.data.sources import data_fingerprint  # torch: only when a key is asked for

    del results  # the data is named by its fingerprint, not by where it is cached
    teacher_cfg = teacher_training_config(cfg)
    parts = {k: v for k, v in teacher_cfg.to_dict().items() if k not in _NOT_SHAPING}
    parts["arch"] = TEACHER_OF[cfg.level]
    parts["data"] = data_fingerprint(cfg.data)
    parts["version"] = 2
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
