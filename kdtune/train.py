"""One trial: train a net at one level with one β schedule, evaluating validation AP as it goes.

``fit(config, report, workdir=...)`` knows nothing of Ray, Optuna or MLflow. Every
``eval_every`` epochs it writes a checkpoint directory and calls
``report(epoch, metrics, checkpoint_dir)``; ``resume_from=<checkpoint dir>`` continues from it.

The story, top to bottom: the run's teacher is settled first (:func:`kdtune.teachers.resolve`:
given, shipped, or trained once and cached); set-up seeds everything, loads the data, builds the
net, its optimizer and learning-rate schedule, and opens the teacher targets (bank, live or
warped: :mod:`kdtune.teacher_targets`, chosen once). Each epoch trains step by step (views,
ground-truth targets, teacher maps where β > 0, the weighted loss); every ``eval_every`` epochs
the net is evaluated, checkpointed (:mod:`kdtune.checkpoints`) and reported. ``level: chain``
is two such runs (:mod:`kdtune.chain`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kdtune import checkpoints
from kdtune.augment import apply
from kdtune.chain import fit_chain
from kdtune.checkpoints import History, Trainee, host_rng_state
from kdtune.config import STUDENT_OF, TrainConfig
from kdtune.data import PoseSet
from kdtune.data.sources import resolve_data
from kdtune.errors import KdtuneError, TrialDiverged
from kdtune.evaluate import DETECTIONS_FILE, save_detections
from kdtune.losses import kd_loss
from kdtune.models import build_model, count_parameters, settle_teacher_input_size
from kdtune.predict import evaluate_model, keep_mask, pick_device, predict_maps
from kdtune.schedules import BetaSchedule, parse_schedule
from kdtune.targets import make_targets
from kdtune.teacher_targets import TeacherTargets, open_targets
from kdtune.teachers import resolve

__all__ = ["TrialDiverged", "fit", "host_rng_state", "lr_factor", "pick_device"]

Report = Callable[[int, dict[str, float], Path], None]
Log = Callable[[str], None]


def fit(
    config: TrainConfig | Mapping[str, Any],
    report: Report | None = None,
    *,
    workdir: Path,
    resume_from: Path | None = None,
    results: Path | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train one run as ``config`` says; returns the summary also written to ``summary.json``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    if cfg.level == "chain":
        return fit_chain(
            cfg, report, fit=fit, workdir=workdir, resume_from=resume_from, results=results, log=log
        )
    teacher = resolve(cfg, results, say, fit=fit) if needs_teacher(cfg) else None
    if teacher is not None:  # `auto`: the size it was trained at; a contradiction refused
        cfg = settle_teacher_input_size(cfg, teacher)
    return _train(cfg, teacher, report, workdir, resume_from, results, say)


def needs_teacher(cfg: TrainConfig) -> bool:
    """Whether run ``cfg`` learns from a teacher's maps at all (not at the teacher level, not
    at α = 1)."""
    return cfg.level != "teacher" and parse_schedule(cfg.schedule).alpha != 1.0


# ---------------------------------------------------------------------------------------------
# The loop


def _train(
    cfg: TrainConfig,
    teacher: Path | None,
    report: Report | None,
    workdir: Path,
    resume_from: Path | None,
    results: Path | None,
    log: Log,
) -> dict[str, Any]:
    started = time.perf_counter()
    run = _set_up(cfg, teacher, results, log)
    history: History = []
    first_epoch = 1
    if resume_from is not None:
        history, first_epoch = checkpoints.restore(run.trainee, Path(resume_from), run.device)
        log(f"resumed from {resume_from} at epoch {first_epoch}")
    n_params = count_parameters(run.trainee.model)
    weighting = "ground truth only" if cfg.level == "teacher" else run.schedule.describe()
    log(f"{cfg.level} level, {run.trainee.arch}: {n_params:,} parameters; {weighting}")
    for epoch in range(first_epoch, cfg.epochs + 1):
        train_metrics = _train_epoch(run, epoch)
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            # long runs between evaluations (a teacher, export's re-training) show progress
            log(
                f"epoch {epoch:3d}/{cfg.epochs}  loss {train_metrics['train/loss']:.4f}"
                f"  {train_metrics['perf/images_per_s']:.0f} img/s"
            )
            continue
        found: list[dict[str, Any]] | None = [] if epoch == cfg.epochs else None
        val_metrics = evaluate_model(
            run.trainee.evaluated, run.val, cfg, run.device, detections=found
        )
        metrics = {"epoch": float(epoch), **train_metrics, **val_metrics}
        history.append(metrics)
        extras = partial(_checkpoint_extras, run, epoch, found)
        ckpt = checkpoints.write(run.trainee, workdir / "checkpoints", epoch, history, extras)
        _write_json(workdir, "metrics.json", history)
        log(_format_metrics(epoch, metrics))
        if report is not None:
            report(epoch, metrics, ckpt)
    final_path = workdir / "model.pt"
    checkpoints.save_final(run.trainee, cfg.epochs, history, final_path)
    summary = _summary(run, history, n_params, time.perf_counter() - started, final_path)
    _write_json(workdir, "summary.json", summary)
    return summary


@dataclass
class Batches:
    """A split held as tensors on the training device."""

    images: torch.Tensor
    keypoints: torch.Tensor
    masks: torch.Tensor


@dataclass
class _Setup:
    """Everything a run's loop reads, made once by :func:`_set_up`."""

    cfg: TrainConfig
    device: torch.device
    schedule: BetaSchedule
    trainee: Trainee  # the net, optimizer, lr schedule, generator: what a checkpoint holds
    forward: Callable[[torch.Tensor], Any]  # the training forward (compiled if asked)
    targets: TeacherTargets
    train: Batches
    val: PoseSet
    steps_per_epoch: int


def _set_up(cfg: TrainConfig, teacher: Path | None, results: Path | None, log: Log) -> _Setup:
    device = pick_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # a teacher learns from the ground truth alone, whatever schedule the config carries
    schedule = parse_schedule("fixed:0" if cfg.level == "teacher" else cfg.schedule)
    _seed_everything(cfg.seed)
    train = resolve_data(
        cfg.data, "train", cfg.input_size, results, cfg.max_train_images, cfg.holdout_fraction
    )  # less its held-out carve, where the run has one
    val = resolve_data(cfg.data, cfg.val_split, cfg.input_size, results, cfg.max_val_images)
    if len(train) == 0:
        raise KdtuneError(f"data: the train split of {cfg.data!r} holds no readable image")
    batches = Batches(train.images.to(device), train.keypoints.to(device), train.masks.to(device))
    model = build_model(STUDENT_OF[cfg.level]).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # the training forward shares its weights with `model`, which evaluations and checkpoints use
    forward = torch.compile(model) if cfg.torch_compile else model
    targets = open_targets(cfg, teacher, train, device, results, log)
    if cfg.scaled_lr != cfg.lr:
        log(
            f"lr {cfg.scaled_lr:.4g}: {cfg.lr:g} scaled ({cfg.lr_scaling}) to batch "
            f"{cfg.batch_size}"
        )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.scaled_lr, weight_decay=cfg.weight_decay
    )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, total=steps_per_epoch * cfg.epochs)
    )
    generator = torch.Generator(device="cpu").manual_seed(data_seed(cfg))
    ema = moving_average(model, cfg.ema_decay)
    trainee = Trainee(STUDENT_OF[cfg.level], cfg, model, optimizer, lr_schedule, generator, ema)
    return _Setup(cfg, device, schedule, trainee, forward, targets, batches, val, steps_per_epoch)


def _train_epoch(run: _Setup, epoch: int) -> dict[str, float]:
    cfg, trainee, data = run.cfg, run.trainee, run.train
    trainee.model.train()
    n = data.images.shape[0]
    order = torch.randperm(n, generator=trainee.generator).to(run.device)
    run.targets.new_epoch(n, trainee.generator)
    # the losses are summed where they are computed and read on the host every
    # sync_every steps: a GPU is never made to wait for the host in between
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)
    beta_sum, seen = 0.0, 0
    t0 = time.perf_counter()
    for step, idx in enumerate(order.split(cfg.batch_size)):
        done = (epoch - 1) * run.steps_per_epoch + step
        beta = run.schedule(done / (run.steps_per_epoch * cfg.epochs))
        losses = _step(run, idx, seen, beta)
        b = int(idx.numel())
        sums += torch.stack([losses["student"], losses["distill"], losses["total"]]).double() * b
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
        "train/lr": float(trainee.optimizer.param_groups[0]["lr"]),
        "perf/images_per_s": seen / elapsed,
    }


def _step(run: _Setup, idx: torch.Tensor, first: int, beta: float) -> dict[str, torch.Tensor]:
    """One optimizer step on images ``idx`` (at position ``first`` of the epoch's order);
    returns the step's losses, detached."""
    cfg, data = run.cfg, run.train
    affine = run.targets.views(idx, first)
    x, kps, ignore = apply(data.images[idx], data.keypoints[idx], data.masks[idx], affine)
    gt_heat, gt_paf = make_targets(kps, cfg.input_size, cfg.stride, cfg.sigma, cfg.paf_thickness)
    keep = keep_mask(ignore, cfg.stride)
    maps = run.targets.maps(idx, x, affine) if beta > 0 else None
    t_heat, t_paf = maps if maps is not None else (None, None)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(cfg, run.device):
        outputs = run.forward(x)
    outputs = [(h.float(), p.float()) for h, p in outputs]
    losses = kd_loss(
        outputs, gt_heat, gt_paf, keep, alpha=1.0 - beta, teacher_heat=t_heat, teacher_paf=t_paf
    )
    run.trainee.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    run.trainee.optimizer.step()
    run.trainee.lr_schedule.step()
    if run.trainee.ema is not None:
        run.trainee.ema.update_parameters(run.trainee.model)
    return {k: v.detach() for k, v in losses.items()}


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# What a run writes besides its checkpoints' state


def _checkpoint_extras(
    run: _Setup, epoch: int, detections: list[dict[str, Any]] | None, where: Path
) -> None:
    """The last checkpoints' drawing of validation predictions; the final model's detections
    (what a paired verdict resamples)."""
    cfg = run.cfg
    if epoch == cfg.epochs or epoch + cfg.eval_every > cfg.epochs:
        _draw_predictions(run, where / "val_keypoints.png")
    if detections is not None:
        ids = run.val.image_ids.tolist()
        save_detections(where / DETECTIONS_FILE, run.val.ann_file, ids, detections)


def _draw_predictions(run: _Setup, path: Path, count: int = 8) -> None:
    from kdtune.draw import draw_persons, save_grid
    from kdtune.evaluate import decode_maps

    subset = run.val.subset(slice(0, min(count, len(run.val))))
    if len(subset) == 0:
        return
    heat, paf, _ = predict_maps(run.trainee.evaluated, subset, run.cfg, run.device)
    people = decode_maps(heat, paf, run.cfg.stride, run.cfg.decoder)
    tiles = []
    for img, persons in zip(subset.images, people, strict=True):
        rgb = img.permute(1, 2, 0).cpu().numpy()
        tiles.append(draw_persons(rgb, [p.keypoints for p in persons]))
    save_grid(path, tiles)


def _summary(
    run: _Setup, history: History, n_params: int, wall: float, model_path: Path
) -> dict[str, Any]:
    final = history[-1] if history else {}
    best = max(history, key=lambda h: h.get("val/ap", -1.0)) if history else {}
    speeds = [h["perf/images_per_s"] for h in history if "perf/images_per_s" in h]
    return {
        "level": run.cfg.level,
        "arch": run.trainee.arch,
        "schedule": run.schedule.spec,
        "alpha": run.schedule.alpha,
        "parameters": n_params,
        "epochs": run.cfg.epochs,
        "final": {k: v for k, v in final.items() if k.startswith("val/")},
        "best_epoch": int(best.get("epoch", 0)),
        "best": {k: v for k, v in best.items() if k.startswith("val/")},
        "wall_s": wall,
        "images_per_s": float(np.median(speeds)) if speeds else 0.0,
        "model": str(model_path),
        "data": run.cfg.data,
    }


def _write_json(workdir: Path, name: str, payload: Any) -> None:
    tmp = workdir / f".{name}.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, workdir / name)


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


def moving_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights and batch-norm statistics that
    a run with ``ema_decay`` > 0 evaluates and delivers (updated after every step), else
    None."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def data_seed(cfg: TrainConfig) -> int:
    """The seed of run ``cfg``'s data order and views: ``data_seed``, else ``seed``."""
    return cfg.seed if cfg.data_seed is None else cfg.data_seed


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
