"""One trial: train a net at one level with one β schedule, evaluating validation AP as it goes.

``fit(config, report, workdir=...)`` knows nothing of Ray, Optuna or MLflow. Every
``eval_every`` epochs it writes a checkpoint directory and calls
``report(epoch, metrics, checkpoint_dir)``; ``resume_from=<checkpoint dir>`` continues from it.

Teachers are either a given checkpoint or one kdtune trained itself and cached under
``<results>/cache/teachers``, keyed by everything that shaped it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdtune.augment import Affine, AugmentParams, apply, sample_affine, warp_maps
from kdtune.bank import (
    TeacherBank,
    run_teacher,
    source_maps,
    view_affines,
)
from kdtune.config import STUDENT_OF, TEACHER_OF, TrainConfig
from kdtune.data import PoseSet
from kdtune.data.sources import resolve_data
from kdtune.errors import KdtuneError, TrialDiverged
from kdtune.evaluate import DETECTIONS_FILE, save_detections
from kdtune.losses import kd_loss
from kdtune.models import (
    build_model,
    count_parameters,
    load_checkpoint,
    weights_digest,
)
from kdtune.paths import cache_dir, file_lock
from kdtune.predict import evaluate_model, keep_mask, predict_maps
from kdtune.schedules import parse_schedule
from kdtune.targets import make_targets
from kdtune.teachers import (
    bank_spec,
    manifest,
    open_bank,
    shipped_teacher,
    teacher_at_grid,
    teacher_key,
    teacher_training_config,
)

Report = Callable[[int, dict[str, float], Path], None]
CHECKPOINT_FILE = "state.pt"
KEEP_CHECKPOINTS = 2


@dataclass
class Batches:
    """A split held as tensors on the training device, with the teacher's maps where needed."""

    images: torch.Tensor
    keypoints: torch.Tensor
    masks: torch.Tensor
    teacher_heat: torch.Tensor | None = None
    teacher_paf: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------
# Public API


def fit(
    config: TrainConfig | Mapping[str, Any],
    report: Report | None = None,
    *,
    workdir: Path,
    resume_from: Path | None = None,
    results: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one run as ``config`` says; returns the summary also written to ``summary.json``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if cfg.level == "chain":
        return _fit_chain(
            cfg, report, workdir=workdir, resume_from=resume_from, results=results, log=log
        )
    return _Run(cfg, workdir, results, log or (lambda _msg: None)).fit(report, resume_from)


def prepare_teacher(
    cfg: TrainConfig, results: Path | None = None, log: Callable[[str], None] | None = None
) -> nn.Module | None:
    """The teacher of ``cfg.level``: a given checkpoint, a shipped one where it fits (recipe
    ``auto`` or ``shipped``), else one kdtune trains once and caches; None if not needed."""
    arch = TEACHER_OF.get(cfg.level)
    if arch is None:
        return None
    if cfg.teacher_checkpoint:
        return load_checkpoint(Path(cfg.teacher_checkpoint), arch)
    say = log or (lambda _m: None)
    if cfg.teacher_recipe in ("auto", "shipped"):
        path, why = shipped_teacher(arch, cfg)
        if path is not None:
            record = manifest(arch) or {}
            ap = record.get("val", {}).get("val/ap", float("nan"))
            say(f"teacher: kdtune's shipped {arch} net (val AP {ap:.3f})")
            return load_checkpoint(path, arch)
        if cfg.teacher_recipe == "shipped":
            raise KdtuneError(f"teacher_recipe: shipped: {why}")
        say(f"teacher: no shipped one fits ({why}); training one by the reference recipe")
    path = _trained_teacher(cfg, results, say)
    return load_checkpoint(path, arch)


def host_rng_state(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as ``Generator.set_state`` and ``torch.set_rng_state`` take it: a CPU byte
    tensor, wherever the checkpoint was mapped (``map_location`` CUDA puts it on the GPU)."""
    return state.to(device="cpu", dtype=torch.uint8)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KdtuneError("device: cuda was asked for but no CUDA device is present")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# The training run


class _Run:
    def __init__(
        self, cfg: TrainConfig, workdir: Path, results: Path | None, log: Callable[[str], None]
    ):
        self.cfg, self.workdir, self.results, self.log = cfg, workdir, results, log
        self.device = pick_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        # a teacher learns from the ground truth alone, whatever schedule the config carries
        self.schedule = parse_schedule("fixed:0" if cfg.level == "teacher" else cfg.schedule)
        self.arch = STUDENT_OF[cfg.level]
        self.aug = AugmentParams(scale=cfg.aug_scale, rotate=cfg.aug_rotate, flip=cfg.aug_flip)

    # -- setup -----------------------------------------------------------------------------
    def _load(self) -> None:
        cfg = self.cfg
        _seed_everything(cfg.seed)
        train = resolve_data(cfg.data, "train", cfg.input_size, self.results, cfg.max_train_images)
        self.val = resolve_data(
            cfg.data, cfg.val_split, cfg.input_size, self.results, cfg.max_val_images
        )
        if len(train) == 0:
            raise KdtuneError(f"data: the train split of {cfg.data!r} holds no readable image")
        self.train = self._to_device(train)
        self.model = build_model(self.arch).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # the training forward, compiled if asked; it shares its weights with self.model, which
        # evaluation and checkpoints use
        self.step_model: Callable[[torch.Tensor], Any] = (
            torch.compile(self.model) if cfg.torch_compile else self.model
        )
        self.teacher: nn.Module | None = None
        self.bank: TeacherBank | None = None
        self.view_table: Affine | None = None
        self._prepare_targets(train)
        if cfg.scaled_lr != cfg.lr:
            self.log(
                f"lr {cfg.scaled_lr:.4g}: {cfg.lr:g} scaled ({cfg.lr_scaling}) to batch "
                f"{cfg.batch_size}"
            )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.scaled_lr, weight_decay=cfg.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = self.steps_per_epoch * cfg.epochs
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(lr_factor, total=total)
        )
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)

    def _prepare_targets(self, train: PoseSet) -> None:
        """Where this run's augmented views and teacher targets come from (``teacher_targets``).

        ``bank``: every image has K fixed views (the same for every trial of a search, α = 1
        included, so that trials differ only in their weighting); the teacher's maps of each
        view are read from the bank. ``live``: a fresh view per step, the teacher run on it.
        ``warped`` (approximate): maps of the un-augmented image, warped with the view.
        """
        cfg = self.cfg
        needs_teacher = self.schedule.alpha != 1.0
        if cfg.level == "teacher":
            return  # the teacher level learns from the ground truth, on fresh views
        if cfg.teacher_targets == "bank":  # the bank's views (the same numbers as it stores)
            table = view_affines(bank_spec(cfg, len(train)))
            self.view_table = Affine(
                table.matrix.to(self.device), table.flipped.to(self.device), table.input_size
            )
        if not needs_teacher:
            return
        teacher = prepare_teacher(cfg, self.results, self.log)
        assert teacher is not None
        net = teacher_at_grid(teacher, cfg).to(self.device).eval()
        if cfg.teacher_targets == "bank":
            self.bank = open_bank(cfg, net, train, self.device, self.results, self.log)
            if self.bank.resident_on(self.device):
                self.log(f"teacher bank copied into {self.device} memory")
        elif cfg.teacher_targets == "live":
            self.teacher = net
        else:
            digest = weights_digest(net)
            heat, paf = source_maps(
                net,
                train,
                key=[digest, cfg.input_size, cfg.teacher_input_size, cfg.stride],
                device=self.device,
                cache=cache_dir(self.results),
            )
            self.train.teacher_heat, self.train.teacher_paf = heat, paf

    def _to_device(self, data: PoseSet) -> Batches:
        return Batches(
            images=data.images.to(self.device),
            keypoints=data.keypoints.to(self.device),
            masks=data.masks.to(self.device),
        )

    # -- loop ------------------------------------------------------------------------------
    def fit(self, report: Report | None, resume_from: Path | None) -> dict[str, Any]:
        started = time.perf_counter()
        self._load()
        history: list[dict[str, float]] = []
        first_epoch = 1
        if resume_from is not None:
            history, first_epoch = self._restore(Path(resume_from))
            self.log(f"resumed from {resume_from} at epoch {first_epoch}")
        n_params = count_parameters(self.model)
        weighting = "ground truth only" if self.cfg.level == "teacher" else self.schedule.describe()
        self.log(f"{self.cfg.level} level, {self.arch}: {n_params:,} parameters; {weighting}")
        for epoch in range(first_epoch, self.cfg.epochs + 1):
            train_metrics = self._train_epoch(epoch)
            if epoch % self.cfg.eval_every and epoch != self.cfg.epochs:
                # long runs between evaluations (a teacher, export's re-training) show progress
                self.log(
                    f"epoch {epoch:3d}/{self.cfg.epochs}  loss {train_metrics['train/loss']:.4f}"
                    f"  {train_metrics['perf/images_per_s']:.0f} img/s"
                )
                continue
            final = epoch == self.cfg.epochs
            found: list[dict[str, Any]] | None = [] if final else None
            metrics = {
                "epoch": float(epoch),
                **train_metrics,
                **evaluate_model(self.model, self.val, self.cfg, self.device, detections=found),
            }
            history.append(metrics)
            ckpt = self._checkpoint(epoch, history, found)
            self._write_json("metrics.json", history)
            self.log(_format_metrics(epoch, metrics))
            if report is not None:
                report(epoch, metrics, ckpt)
        final_path = self.workdir / "model.pt"
        _save_atomic(self._state(self.cfg.epochs, history), final_path)
        summary = self._summary(history, n_params, time.perf_counter() - started, final_path)
        self._write_json("summary.json", summary)
        return summary

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model, data = self.cfg, self.model, self.train
        model.train()
        n = data.images.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.device)
        views = self._epoch_views(n)
        # fresh views (no bank): the epoch's transforms drawn at once, so no step waits on them
        fresh = (
            None
            if views is not None
            else sample_affine(n, self.aug, self.generator, self.device, cfg.input_size)
        )
        # the losses are summed where they are computed and read on the host every
        # sync_every steps: a GPU is never made to wait for the host in between
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        beta_sum, seen = 0.0, 0
        t0 = time.perf_counter()
        for step, idx in enumerate(order.split(cfg.batch_size)):
            progress = ((epoch - 1) * self.steps_per_epoch + step) / (
                self.steps_per_epoch * cfg.epochs
            )
            beta = self.schedule(progress)
            b = int(idx.numel())
            affine = fresh[seen : seen + b] if fresh is not None else None
            x, gt_heat, gt_paf, keep, t_heat, t_paf = self._batch(
                idx, views, affine, with_teacher=beta > 0
            )
            with self._autocast():
                outputs = self.step_model(x)
            outputs = [(h.float(), p.float()) for h, p in outputs]
            losses = kd_loss(
                outputs,
                gt_heat,
                gt_paf,
                keep,
                alpha=1.0 - beta,
                teacher_heat=t_heat,
                teacher_paf=t_paf,
            )
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            self.optimizer.step()
            self.lr_schedule.step()
            parts = torch.stack([losses["student"], losses["distill"], losses["total"]])
            sums += parts.detach().double() * b
            beta_sum += beta * b
            seen += b
            if (step + 1) % cfg.sync_every == 0 or seen == n:
                total = float(sums[2])
                if not math.isfinite(total):
                    raise TrialDiverged(
                        f"loss became {total} at epoch {epoch}, by step {step} "
                        f"(read every {cfg.sync_every} steps)"
                    )
        elapsed = time.perf_counter() - t0
        student, distill, total = (float(v) / seen for v in sums.cpu())
        return {
            "train/student_loss": student,
            "train/distill_loss": distill,
            "train/loss": total,
            "train/beta": beta_sum / seen,
            "train/lr": float(self.optimizer.param_groups[0]["lr"]),
            "perf/images_per_s": seen / elapsed,
        }

    def _epoch_views(self, n: int) -> torch.Tensor | None:
        """Which of its K fixed views each image is trained on this epoch (bank mode)."""
        if self.view_table is None:
            return None
        drawn = torch.randint(self.cfg.teacher_views, (n,), generator=self.generator)
        return drawn.to(self.device)

    def _batch(
        self,
        idx: torch.Tensor,
        views: torch.Tensor | None,
        affine: Affine | None,
        *,
        with_teacher: bool,
    ) -> tuple[torch.Tensor, ...]:
        """Step ``idx``'s inputs and targets: with a bank, each image's view ``views[idx]`` and
        the bank's maps of it; else the fresh transforms ``affine``."""
        cfg, data = self.cfg, self.train
        t_heat = t_paf = None
        if views is not None:  # one of each image's fixed views, as the bank holds them
            assert self.view_table is not None
            view = views[idx]
            affine = self.view_table[idx * cfg.teacher_views + view]
            if with_teacher and self.bank is not None:
                t_heat, t_paf = self.bank.maps(idx, view, self.device)
        assert affine is not None
        x, kps, ignore = apply(data.images[idx], data.keypoints[idx], data.masks[idx], affine)
        gt_heat, gt_paf = make_targets(
            kps, cfg.input_size, cfg.stride, cfg.sigma, cfg.paf_thickness
        )
        keep = keep_mask(ignore, cfg.stride)
        if with_teacher and self.teacher is not None:
            t_heat, t_paf = run_teacher(self.teacher, x, cfg.input_size // cfg.stride, cfg.amp)
        elif with_teacher and data.teacher_heat is not None and data.teacher_paf is not None:
            t_heat, t_paf = warp_maps(
                data.teacher_heat[idx].float(),
                data.teacher_paf[idx].float(),
                affine,
                cfg.input_size,
            )
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, gt_heat, gt_paf, keep, t_heat, t_paf  # type: ignore[return-value]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # -- checkpoints -----------------------------------------------------------------------
    def _state(self, epoch: int, history: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "epoch": epoch,
            "history": history,
            "config": self.cfg.to_dict(),
            "rng": {
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
            },
        }

    def _checkpoint(
        self,
        epoch: int,
        history: list[dict[str, float]],
        detections: list[dict[str, Any]] | None = None,
    ) -> Path:
        root = self.workdir / "checkpoints"
        ckpt = root / f"epoch_{epoch:04d}"
        tmp = root / f".epoch_{epoch:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(self._state(epoch, history), tmp / CHECKPOINT_FILE)
        (tmp / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(history, indent=2))
        if epoch == self.cfg.epochs or epoch + self.cfg.eval_every > self.cfg.epochs:
            self._draw_predictions(tmp / "val_keypoints.png")
        if detections is not None:  # the final model's: what a paired verdict resamples
            save_detections(
                tmp / DETECTIONS_FILE, self.val.ann_file, self.val.image_ids.tolist(), detections
            )
        shutil.rmtree(ckpt, ignore_errors=True)
        os.replace(tmp, ckpt)
        for old in sorted(p for p in root.glob("epoch_*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return ckpt

    def _restore(self, path: Path) -> tuple[list[dict[str, float]], int]:
        file = path / CHECKPOINT_FILE if path.is_dir() else path
        if not file.is_file():
            raise KdtuneError(f"resume: no checkpoint at {file}")
        try:
            state = torch.load(file, map_location=self.device, weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise KdtuneError(
                f"resume: {file} is not a kdtune checkpoint ({type(exc).__name__})"
            ) from None
        if state.get("arch") != self.arch:
            raise KdtuneError(
                f"resume: {file} holds a {state.get('arch')!r} net, this run trains {self.arch!r}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        rng = state["rng"]
        self.generator.set_state(host_rng_state(rng["generator"]))
        torch.set_rng_state(host_rng_state(rng["torch"]))
        return list(state["history"]), int(state["epoch"]) + 1

    def _draw_predictions(self, path: Path, count: int = 8) -> None:
        from kdtune.draw import draw_persons, save_grid
        from kdtune.evaluate import decode_maps

        subset = self.val.subset(slice(0, min(count, len(self.val))))
        if len(subset) == 0:
            return
        heat, paf, _ = predict_maps(self.model, subset, self.cfg, self.device)
        people = decode_maps(heat, paf, self.cfg.stride, self.cfg.decoder)
        tiles = []
        for img, persons in zip(subset.images, people, strict=True):
            rgb = img.permute(1, 2, 0).cpu().numpy()
            tiles.append(draw_persons(rgb, [p.keypoints for p in persons]))
        save_grid(path, tiles)

    def _summary(
        self, history: list[dict[str, float]], n_params: int, wall: float, model_path: Path
    ) -> dict[str, Any]:
        final = history[-1] if history else {}
        best = max(history, key=lambda h: h.get("val/ap", -1.0)) if history else {}
        speeds = [h["perf/images_per_s"] for h in history if "perf/images_per_s" in h]
        return {
            "level": self.cfg.level,
            "arch": self.arch,
            "schedule": self.schedule.spec,
            "alpha": self.schedule.alpha,
            "parameters": n_params,
            "epochs": self.cfg.epochs,
            "final": {k: v for k, v in final.items() if k.startswith("val/")},
            "best_epoch": int(best.get("epoch", 0)),
            "best": {k: v for k, v in best.items() if k.startswith("val/")},
            "wall_s": wall,
            "images_per_s": float(np.median(speeds)) if speeds else 0.0,
            "model": str(model_path),
            "data": self.cfg.data,
        }

    def _write_json(self, name: str, payload: Any) -> None:
        tmp = self.workdir / f".{name}.tmp"
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.workdir / name)


# ---------------------------------------------------------------------------------------------
# Chain: teacher -> med -> tiny in one trial


def _fit_chain(
    cfg: TrainConfig,
    report: Report | None,
    *,
    workdir: Path,
    resume_from: Path | None,
    results: Path | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """First level (med, weighted by ``schedule``), then the second (tiny, ``schedule_second``)
    taught by that med. Only the second level reports: its AP is the chain's objective."""
    first_dir = workdir / "first"
    first_summary = first_dir / "summary.json"
    if first_summary.is_file():
        first = json.loads(first_summary.read_text())
    else:
        first = fit(replace(cfg, level="first"), None, workdir=first_dir, results=results, log=log)
    second_cfg = replace(
        cfg, level="second", schedule=cfg.schedule_second, teacher_checkpoint=first["model"]
    )
    first_ap = float(first["final"].get("val/ap", 0.0))

    def report_second(epoch: int, metrics: dict[str, float], ckpt: Path) -> None:
        if report is not None:
            report(epoch, {**metrics, "first/val/ap": first_ap}, ckpt)

    summary = fit(
        second_cfg,
        report_second,
        workdir=workdir / "second",
        resume_from=resume_from,
        results=results,
        log=log,
    )
    summary = {**summary, "level": "chain", "first": first}
    tmp = workdir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, workdir / "summary.json")
    return summary


def _save_atomic(state: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a killed save never leaves a
    truncated file under ``path`` (a teacher's ``model.pt`` becomes the teacher cache)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Teachers: trained once, cached by what shaped them


def _trained_teacher(cfg: TrainConfig, results: Path | None, log: Callable[[str], None]) -> Path:
    arch = TEACHER_OF[cfg.level]
    root = cache_dir(results) / "teachers" / f"{arch}-{teacher_key(cfg, results)}"
    model_path = root / "model.pt"
    if model_path.is_file():
        return model_path
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if model_path.is_file():  # another process trained it while we waited
            return model_path
        recipe = "ground_truth" if cfg.teacher_recipe == "ground_truth" else "reference"
        log(
            f"training a {arch} net as the teacher ({cfg.teacher_epochs} epochs, "
            f"recipe {recipe}) into {root}"
        )
        work = root / "run"
        fit(teacher_training_config(cfg), None, workdir=work, results=results, log=log)
        os.replace(work / "model.pt", model_path)
    return model_path


# ---------------------------------------------------------------------------------------------
# Helpers

WARMUP_STEPS = 50


def lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up over the first steps, then a cosine to 5 %."""
    warm = min(WARMUP_STEPS, max(total // 10, 1))
    if step < warm:
        return (step + 1) / warm
    progress = min(step - warm, total - warm) / max(total - warm, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _format_metrics(epoch: int, m: Mapping[str, float]) -> str:
    return (
        f"epoch {epoch:3d}  loss {m.get('train/loss', 0):.4f} "
        f"(student {m.get('train/student_loss', 0):.4f}, "
        f"distill {m.get('train/distill_loss', 0):.4f}, β {m.get('train/beta', 0):.2f})  "
        f"val loss {m.get('val/loss', 0):.4f}  AP {m.get('val/ap', 0):.3f}  "
        f"AP50 {m.get('val/ap50', 0):.3f}  "
        f"{m.get('perf/images_per_s', 0):.0f} img/s"
    )
