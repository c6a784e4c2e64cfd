"""A population fit: P runs of one trial set-up trained in lockstep by one process.

``fit_population(configs, reports, workdirs=...)`` trains the runs ``configs`` (members) as one
:class:`kdtune.population.Population`: one data pipeline, one augmentation, one teacher-map read
per batch, one forward and backward of the fused net. Members may differ only in their weighting
(``schedule``: a fixed α or a β schedule), their ``seed`` (the init of their net) and their
``lr``; everything else, the data seed included (``data_seed``, else ``seed``), must agree, so
that every member sees exactly the batches it would see trained alone by :func:`kdtune.train.fit`.

Each member has its own folder (``workdirs[m]``: ``metrics.json``, ``checkpoints/``,
``model.pt``, ``summary.json``, as a run of ``fit`` writes them) and its own report callable,
called at each of its evaluations with ``(epoch, metrics, checkpoint_dir)``. A report that raises
:class:`MemberPruned` drops its member: the population is rebuilt without it (its optimizer state
kept for the others) and the others go on. A member whose loss stops being finite is dropped the
same way (state ``diverged``). The call returns one :class:`MemberResult` per member.

A member's checkpoint holds its weights, history and config (not the population's optimizer
state): a population is not resumed; a member's checkpoint and ``model.pt`` load as any run's
net does (``kdtune eval``, export).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdtune.augment import apply
from kdtune.config import STUDENT_OF, TrainConfig
from kdtune.data.sources import resolve_data
from kdtune.errors import KdtuneError
from kdtune.evaluate import DETECTIONS_FILE, save_detections
from kdtune.models import build_model, count_parameters
from kdtune.population import MemberAdam, Population, member_losses, member_state
from kdtune.predict import evaluate_model, keep_mask, pick_device, predict_maps
from kdtune.schedules import BetaSchedule, parse_schedule
from kdtune.targets import make_targets
from kdtune.teacher_targets import open_targets
from kdtune.teachers import resolve
from kdtune.train import (
    Batches,
    _autocast,
    _seed_everything,
    _write_json,
    data_seed,
    fit,
    lr_factor,
    needs_teacher,
)

MemberReport = Callable[[int, dict[str, float], Path], None]
Log = Callable[[str], None]

# what members may differ in; every other key of their configs must agree
MEMBER_KEYS = ("schedule", "seed", "lr", "extra")
FINISHED, PRUNED, DIVERGED = "finished", "pruned", "diverged"


class MemberPruned(Exception):
    """Raised by a member's report: drop this member, train the others on."""


@dataclass
class MemberResult:
    """How one member ended: its state, the epoch it reached, its summary (finished members)."""

    member: int
    config: TrainConfig
    state: str = FINISHED
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    reason: str = ""


def check_members(configs: Sequence[TrainConfig]) -> None:
    """A one-line :class:`KdtuneError` unless ``configs`` can train as one population."""
    if not configs:
        raise KdtuneError("population: no members")
    first = configs[0]
    if first.level not in ("first", "second"):
        raise KdtuneError(
            f"population: level {first.level!r} cannot train as a population "
            "(only the first and second levels' students fuse)"
        )
    if first.ema_decay > 0:
        raise KdtuneError(
            "population: ema_decay is not supported in a population (members keep no moving "
            "average): train these runs separately, or set ema_decay: 0"
        )
    apart = (*MEMBER_KEYS, "data_seed")  # the data seed is compared as it acts, below
    shared = {k: v for k, v in first.to_dict().items() if k not in apart}
    for m, cfg in enumerate(configs[1:], start=1):
        mine = {k: v for k, v in cfg.to_dict().items() if k not in apart}
        differ = sorted(k for k in shared if shared[k] != mine[k])
        if differ:
            raise KdtuneError(
                f"population: member {m} differs from member 0 in {', '.join(differ)} "
                f"(members may differ only in {', '.join(MEMBER_KEYS[:3])})"
            )
    seeds = {data_seed(cfg) for cfg in configs}
    if len(seeds) != 1:
        raise KdtuneError(
            f"population: the members' data seeds differ ({sorted(seeds)}): set one data_seed "
            "so that every member trains on the same batches"
        )


def fit_population(
    configs: Sequence[TrainConfig],
    reports: Sequence[MemberReport | None] | None = None,
    *,
    workdirs: Sequence[Path],
    results: Path | None = None,
    log: Log | None = None,
    on_evaluated: Callable[[int], None] | None = None,
) -> list[MemberResult]:
    """Train ``configs`` as one population; see the module's docstring. ``on_evaluated(epoch)``
    is called after every member's report of an evaluation (e.g. to hand them on at once)."""
    configs = [c.validate() for c in configs]
    check_members(configs)  # before sizing: a population that cannot form is not measured
    fits = members_that_fit(configs[0], len(configs))  # on a GPU: from its free memory
    if fits < len(configs):
        raise KdtuneError(
            f"population: {len(configs)} members at batch {configs[0].batch_size} do not fit "
            f"the device's free memory ({fits} do): fewer members or a smaller batch"
        )
    return _fit(configs, reports, workdirs, results, log, on_evaluated)


def _fit(
    configs: list[TrainConfig],
    reports: Sequence[MemberReport | None] | None,
    workdirs: Sequence[Path],
    results: Path | None,
    log: Log | None,
    on_evaluated: Callable[[int], None] | None,
) -> list[MemberResult]:
    """:func:`fit_population` once the members are known to fit the device."""
    check_members(configs)
    if len(workdirs) != len(configs):
        raise KdtuneError(f"population: {len(workdirs)} folders for {len(configs)} members")
    reports = list(reports) if reports is not None else [None] * len(configs)
    if len(reports) != len(configs):
        raise KdtuneError(f"population: {len(reports)} reports for {len(configs)} members")
    say = log or (lambda _msg: None)
    teacher = _one_teacher(configs, results, say)
    run = _Lockstep(configs, list(reports), [Path(w) for w in workdirs], teacher, results, say)
    run.on_evaluated = on_evaluated
    return run()


def fit_populations(
    configs: Sequence[TrainConfig],
    reports: Sequence[MemberReport | None] | None = None,
    *,
    workdirs: Sequence[Path],
    results: Path | None = None,
    log: Log | None = None,
    on_evaluated: Callable[[int], None] | None = None,
) -> list[MemberResult]:
    """Train ``configs`` (runs that :func:`populations` put together) as few populations as
    the device allows, one after another: the members that learn from one teacher together
    (kdtune trains one per seed and lr where none is given or shipped), as many at once as
    :func:`members_that_fit`. One :class:`MemberResult` per run, in ``configs``' order (each
    ``member`` its index in ``configs``)."""
    configs = [c.validate() for c in configs]
    reports = list(reports) if reports is not None else [None] * len(configs)
    say = log or (lambda _msg: None)
    by_teacher: dict[str, list[int]] = {}
    for m, cfg in enumerate(configs):
        teacher = resolve(cfg, results, say, fit=fit) if needs_teacher(cfg) else None
        by_teacher.setdefault(str(teacher), []).append(m)
    outcomes: dict[int, MemberResult] = {}
    for group in by_teacher.values():
        size = members_that_fit(configs[group[0]], len(group))  # measured once a group
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            done = _fit(
                [configs[m] for m in chunk],
                [reports[m] for m in chunk],
                [workdirs[m] for m in chunk],
                results,
                say,
                on_evaluated,
            )
            for m, out in zip(chunk, done, strict=True):
                out.member = m
                outcomes[m] = out
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next group's measure sees the memory free
    return [outcomes[m] for m in range(len(configs))]


def _one_teacher(configs: Sequence[TrainConfig], results: Path | None, log: Log) -> Path | None:
    """The teacher checkpoint every taught member learns from (None: no member is taught).
    A teacher kdtune trains itself is keyed by the student's whole config, seed and lr
    included: members that would each get their own must be given one (``teacher_checkpoint``)."""
    teacher: Path | None = None
    for m, cfg in enumerate(configs):
        if not needs_teacher(cfg):
            continue
        mine = resolve(cfg, results, log, fit=fit)
        if mine is None:
            continue
        if teacher is not None and Path(mine) != teacher:
            raise KdtuneError(
                f"population: member {m} would learn from another teacher than the others "
                "(kdtune trains one per seed and lr): give one teacher (teacher.checkpoint)"
            )
        teacher = Path(mine)
    return teacher


class _Lockstep:
    """The loop: set-up once, then epochs of fused steps; members leave as they are dropped."""

    def __init__(
        self,
        configs: list[TrainConfig],
        reports: list[MemberReport | None],
        workdirs: list[Path],
        teacher: Path | None,
        results: Path | None,
        log: Log,
    ) -> None:
        cfg = configs[0]
        self.configs, self.reports, self.workdirs, self.log = configs, reports, workdirs, log
        self.cfg = next((c for c in configs if needs_teacher(c)), cfg)  # opens the teacher maps
        self.device = pick_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.schedules: list[BetaSchedule] = [parse_schedule(c.schedule) for c in configs]
        train = resolve_data(cfg.data, "train", cfg.input_size, results, cfg.max_train_images)
        self.val = resolve_data(
            cfg.data, cfg.val_split, cfg.input_size, results, cfg.max_val_images
        )
        if len(train) == 0:
            raise KdtuneError(f"data: the train split of {cfg.data!r} holds no readable image")
        dev = self.device
        self.train = Batches(train.images.to(dev), train.keypoints.to(dev), train.masks.to(dev))
        self.arch = STUDENT_OF[cfg.level]
        nets = []
        for member in configs:  # each member's init as `fit` draws it: seeded, then built
            _seed_everything(member.seed)
            nets.append(build_model(self.arch).to(dev))
        self.n_params = count_parameters(nets[0])
        self.targets = open_targets(self.cfg, teacher, train, dev, results, log)
        self.active = list(range(len(configs)))
        self.population = self._fuse(nets)
        self.optimizer = MemberAdam(
            self.population, [c.scaled_lr for c in configs], weight_decay=cfg.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.generator = torch.Generator(device="cpu").manual_seed(data_seed(cfg))
        self.outcomes = [MemberResult(m, c) for m, c in enumerate(configs)]
        self.on_evaluated: Callable[[int], None] | None = None
        for w in workdirs:
            w.mkdir(parents=True, exist_ok=True)

    def _fuse(self, nets: list[torch.nn.Module]) -> Population:
        population = Population(nets)
        if self.configs[0].channels_last:
            population = population.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return population

    def __call__(self) -> list[MemberResult]:
        cfg = self.configs[0]
        started = time.perf_counter()
        self.log(
            f"population of {len(self.configs)} {self.arch} students "
            f"({self.n_params:,} parameters each) on {self.device}"
        )
        for epoch in range(1, cfg.epochs + 1):
            if not self.active:
                break
            metrics = self._epoch(epoch)
            if epoch % cfg.eval_every and epoch != cfg.epochs:
                continue
            self._evaluate(epoch, metrics)
        wall = time.perf_counter() - started
        for m in list(self.active):
            self._finish(m, wall)
        return self.outcomes

    # ---------------------------------------------------------------------------- training

    def _epoch(self, epoch: int) -> dict[int, dict[str, float]]:
        cfg, data = self.configs[0], self.train
        self.population.train()
        n = data.images.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.device)
        self.targets.new_epoch(n, self.generator)
        size = len(self.active)
        sums = torch.zeros(size, 3, dtype=torch.float64, device=self.device)
        beta_sums = np.zeros(size)
        seen = 0
        t0 = time.perf_counter()
        for step, idx in enumerate(order.split(cfg.batch_size)):
            done = (epoch - 1) * self.steps_per_epoch + step
            q = done / self.total_steps
            betas = [self.schedules[m](q) for m in self.active]
            losses = self._step(idx, seen, betas, lr_factor(done, self.total_steps))
            b = int(idx.numel())
            sums += torch.stack([losses["student"], losses["distill"], losses["total"]], 1) * b
            beta_sums += np.asarray(betas) * b
            seen += b
            if (step + 1) % cfg.sync_every == 0 or seen == n:
                sums, beta_sums = self._drop_diverged(sums, beta_sums, epoch, step)
                if not self.active:
                    return {}
        elapsed = time.perf_counter() - t0
        factor = lr_factor(min(epoch * self.steps_per_epoch, self.total_steps), self.total_steps)
        per_member = {}
        for row, m in enumerate(self.active):
            student, distill, total = (float(v) / seen for v in sums[row].cpu())
            per_member[m] = {
                "train/student_loss": student,
                "train/distill_loss": distill,
                "train/loss": total,
                "train/beta": float(beta_sums[row]) / seen,
                "train/lr": self.configs[m].scaled_lr * factor,
                # each member trains on every image the population trains on
                "perf/images_per_s": seen / elapsed,
            }
        return per_member

    def _step(
        self, idx: torch.Tensor, first: int, betas: list[float], factor: float
    ) -> dict[str, torch.Tensor]:
        cfg, data = self.configs[0], self.train
        affine = self.targets.views(idx, first)
        x, kps, ignore = apply(data.images[idx], data.keypoints[idx], data.masks[idx], affine)
        gt_heat, gt_paf = make_targets(
            kps, cfg.input_size, cfg.stride, cfg.sigma, cfg.paf_thickness
        )
        keep = keep_mask(ignore, cfg.stride)
        maps = self.targets.maps(idx, x, affine) if max(betas) > 0 else None
        t_heat, t_paf = maps if maps is not None else (None, None)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg, self.device):
            outputs = self.population(x)
        outputs = [(h.float(), p.float()) for h, p in outputs]
        alphas = torch.tensor([1.0 - b for b in betas], device=self.device)
        losses = member_losses(outputs, gt_heat, gt_paf, keep, alphas, t_heat, t_paf)
        self.optimizer.zero_grad()
        losses["total"].sum().backward()
        self.optimizer.step(factor)
        return {k: v.detach() for k, v in losses.items()}

    def _drop_diverged(
        self, sums: torch.Tensor, beta_sums: np.ndarray, epoch: int, step: int
    ) -> tuple[torch.Tensor, np.ndarray]:
        finite = torch.isfinite(sums[:, 2]).tolist()
        if all(finite):
            return sums, beta_sums
        keep = [row for row, ok in enumerate(finite) if ok]
        for row, ok in enumerate(finite):
            if not ok:
                m = self.active[row]
                self.outcomes[m].state = DIVERGED
                self.outcomes[
                    m
                ].reason = f"loss became {float(sums[row, 2])} at epoch {epoch}, by step {step}"
                self.log(f"member {m}: {self.outcomes[m].reason}; the others go on")
        self._shrink(keep)
        return sums[keep], beta_sums[keep]

    def _shrink(self, keep_rows: list[int]) -> None:
        """The population rebuilt with the members at rows ``keep_rows`` only, each with its
        weights, batch-norm statistics and Adam moments."""
        old, opt = self.population, self.optimizer
        self.active = [self.active[r] for r in keep_rows]
        if not self.active:
            return
        nets = []
        for row in keep_rows:
            net = build_model(self.arch).to(self.device)
            net.load_state_dict(member_state(old, row))
            nets.append(net)
        self.population = self._fuse(nets)
        self.population.train(old.training)
        new = MemberAdam(
            self.population,
            [self.configs[m].scaled_lr for m in self.active],
            weight_decay=opt.weight_decay,
            betas=opt.betas,
            eps=opt.eps,
        )
        new.step_count = opt.step_count
        with torch.no_grad():
            for mine, theirs in ((new.exp_avg, opt.exp_avg), (new.exp_avg_sq, opt.exp_avg_sq)):
                for t, s in zip(mine, theirs, strict=True):
                    rows = s.reshape(old.size, -1)[keep_rows]
                    t.copy_(rows.view(t.shape))
        self.optimizer = new

    # ---------------------------------------------------------------------------- evaluation

    def _member_net(self, row: int) -> torch.nn.Module:
        net = build_model(self.arch).to(self.device)
        net.load_state_dict(member_state(self.population, row))
        if self.configs[0].channels_last:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return net

    def _evaluate(self, epoch: int, train_metrics: dict[int, dict[str, float]]) -> None:
        last = epoch == self.configs[0].epochs
        dropped: list[int] = []
        for row, m in enumerate(list(self.active)):
            cfg, out = self.configs[m], self.outcomes[m]
            found: list[dict[str, Any]] | None = [] if last else None
            net = self._member_net(row)
            val = evaluate_model(net, self.val, cfg, self.device, detections=found)
            metrics = {"epoch": float(epoch), **train_metrics[m], **val}
            out.history.append(metrics)
            out.epoch = epoch
            ckpt = self._checkpoint(m, net, epoch, found)
            _write_json(self.workdirs[m], "metrics.json", out.history)
            report = self.reports[m]
            if report is None:
                continue
            try:
                report(epoch, metrics, ckpt)
            except MemberPruned as why:
                out.state, out.reason = PRUNED, str(why) or f"pruned at epoch {epoch}"
                self.log(f"member {m}: {out.reason}; the others go on")
                dropped.append(row)
        if dropped:
            self._shrink([r for r in range(len(self.active)) if r not in dropped])
        if self.on_evaluated is not None:
            self.on_evaluated(epoch)

    def _checkpoint(
        self, m: int, net: torch.nn.Module, epoch: int, detections: list[dict[str, Any]] | None
    ) -> Path:
        """Member ``m``'s checkpoint ``checkpoints/epoch_NNNN`` (written under a temporary
        name, then renamed; the newest two kept)."""
        root = self.workdirs[m] / "checkpoints"
        ckpt, tmp = root / f"epoch_{epoch:04d}", root / f".epoch_{epoch:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(self._state(m, net, epoch), tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(self.configs[m].to_dict(), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(self.outcomes[m].history, indent=2))
        cfg = self.configs[m]
        if epoch == cfg.epochs or epoch + cfg.eval_every > cfg.epochs:  # as `fit` draws it
            self._draw(net, cfg, tmp / "val_keypoints.png")
        if detections is not None:
            ids = self.val.image_ids.tolist()
            save_detections(tmp / DETECTIONS_FILE, self.val.ann_file, ids, detections)
        shutil.rmtree(ckpt, ignore_errors=True)
        os.replace(tmp, ckpt)
        for old in sorted(p for p in root.glob("epoch_*") if p.is_dir())[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return ckpt

    def _draw(self, net: torch.nn.Module, cfg: TrainConfig, path: Path, count: int = 8) -> None:
        """A member's predictions on the first validation images, drawn (``val_keypoints.png``
        in its last checkpoints, as a lone run's)."""
        from kdtune.draw import draw_persons, save_grid
        from kdtune.evaluate import decode_maps

        subset = self.val.subset(slice(0, min(count, len(self.val))))
        if len(subset) == 0:
            return
        heat, paf, _ = predict_maps(net, subset, cfg, self.device)
        people = decode_maps(heat, paf, cfg.stride, cfg.decoder)
        tiles = []
        for img, persons in zip(subset.images, people, strict=True):
            rgb = img.permute(1, 2, 0).cpu().numpy()
            tiles.append(draw_persons(rgb, [p.keypoints for p in persons]))
        save_grid(path, tiles)

    def _state(self, m: int, net: torch.nn.Module, epoch: int) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "model": net.state_dict(),
            "epoch": epoch,
            "history": self.outcomes[m].history,
            "config": self.configs[m].to_dict(),
            "population": {"size": len(self.configs), "member": m},
        }

    def _finish(self, m: int, wall: float) -> None:
        out, cfg, workdir = self.outcomes[m], self.configs[m], self.workdirs[m]
        net = self._member_net(self.active.index(m))
        final_path = workdir / "model.pt"
        tmp = final_path.with_name(".model.pt.tmp")
        torch.save(self._state(m, net, cfg.epochs), tmp)
        os.replace(tmp, final_path)
        history = out.history
        final = history[-1] if history else {}
        best = max(history, key=lambda h: h.get("val/ap", -1.0)) if history else {}
        speeds = [h["perf/images_per_s"] for h in history if "perf/images_per_s" in h]
        schedule = self.schedules[m]
        out.summary = {
            "level": cfg.level,
            "arch": self.arch,
            "schedule": schedule.spec,
            "alpha": schedule.alpha,
            "parameters": self.n_params,
            "epochs": cfg.epochs,
            "final": {k: v for k, v in final.items() if k.startswith("val/")},
            "best_epoch": int(best.get("epoch", 0)),
            "best": {k: v for k, v in best.items() if k.startswith("val/")},
            "wall_s": wall,
            "images_per_s": float(np.median(speeds)) if speeds else 0.0,
            "model": str(final_path),
            "data": cfg.data,
            "population": {"size": len(self.configs), "member": m},
        }
        _write_json(workdir, "summary.json", out.summary)


# ---------------------------------------------------------------------------------------------
# Which runs train together, and how many fit the device


def populations(configs: Sequence[TrainConfig], size: int) -> list[list[int]]:
    """The runs ``configs`` (e.g. a confirmation's or a racing round's (configuration, seed)
    runs) grouped into populations of at most ``size`` members that can train together: the
    same config apart from weighting and lr, and the same seed (so each member keeps the init
    and the batches it would get alone, and members of one seed compare exactly paired).
    Returns lists of indices into ``configs``, in order of first appearance."""
    if size < 1:
        raise KdtuneError(f"population: size must be at least 1, got {size}")
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        d = cfg.to_dict()
        key = json.dumps(
            {k: v for k, v in d.items() if k not in ("schedule", "lr", "extra")},
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(i)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def members_that_fit(cfg: TrainConfig, wanted: int, *, headroom: float = 0.8) -> int:
    """How many members of run ``cfg``'s kind train at once on its device: ``wanted`` on a CPU;
    on a GPU, as many as ``headroom`` of its free memory holds, from one member's measured peak
    (a training step of the student at ``cfg.batch_size``). A device that cannot hold even one
    is a one-line :class:`KdtuneError`."""
    device = pick_device(cfg.device)
    if wanted < 1:
        raise KdtuneError(f"population: size must be at least 1, got {wanted}")
    if device.type != "cuda":
        return wanted
    free, _total = torch.cuda.mem_get_info(device)
    try:
        per_member = member_peak_bytes(cfg, device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise KdtuneError(
            f"population: one {STUDENT_OF[cfg.level]} member at batch {cfg.batch_size} does not "
            f"fit {device}'s {free / 2**30:.2f} GiB free: lower train.batch_size"
        ) from None
    fits = int(headroom * free // max(per_member, 1))
    if fits < 1:
        raise KdtuneError(
            f"population: one {STUDENT_OF[cfg.level]} member at batch {cfg.batch_size} needs "
            f"{per_member / 2**30:.2f} GiB, {device} has {free / 2**30:.2f} GiB free: "
            "lower train.batch_size"
        )
    return min(wanted, fits)


def member_peak_bytes(cfg: TrainConfig, device: torch.device) -> int:
    """The GPU memory one member's training step takes at ``cfg.batch_size`` (weights, Adam's
    moments, activations), measured with one plain student."""
    from kdtune.losses import kd_loss

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    net = build_model(STUDENT_OF[cfg.level]).to(device)
    opt = torch.optim.Adam(net.parameters())
    x = torch.randn(cfg.batch_size, 3, cfg.input_size, cfg.input_size, device=device)
    grid = cfg.input_size // cfg.stride
    heat = torch.rand(cfg.batch_size, 19, grid, grid, device=device)
    paf = torch.rand(cfg.batch_size, 38, grid, grid, device=device)
    with _autocast(cfg, device):
        outputs = net(x)
    outputs = [(h.float(), p.float()) for h, p in outputs]
    kd_loss(outputs, heat, paf, None, alpha=1.0)["total"].backward()
    opt.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del net, opt, x, heat, paf, outputs
    torch.cuda.empty_cache()
    return int(peak)
