"""A population of P students against P separate trial processes and the model-only bound.

Three ways to train P second-level tiny students (med teacher, bank targets, batch B each, on
the same decoded training images), run side by side in one run, alternating within each repeat
so that the machine's noise hits all three; figures are medians over ``--repeats``:

- population: one process, ``population_fit.fit_population`` (P members of different α and
  seed, one data pipeline, the fused net); summed images/s = P × its training images/s;
- separate: P ``train.fit`` processes started at once (as P trials of a search share a device),
  each with 1/P of the CPU threads; summed images/s = the sum of their training images/s (each
  measured while the others run: the sum overstates where their epochs do not overlap, as with
  short runs whose start-up dominates);
- both also over wall time: all members' training images over the wall time of the population
  call, or of the P processes from the first start to the last end (start-up, set-up and
  evaluation included);
- model only: one plain tiny net at batch P × B on one fixed batch with fixed targets (forward,
  loss, backward, Adam): the bound no loop at that total batch and precision can beat.

Training images/s only (evaluation excluded), as ``bench_trial.py`` measures a trial::

    python benchmarks/bench_population.py --members 4 --batch-size 16 --images 128
    python benchmarks/bench_population.py --device cuda --amp --members 8 --batch-size 256 \
        --images 4096 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_trial import model_only_speed
from figures import emit

from kdtune.config import TrainConfig
from kdtune.models import build_model
from kdtune.population_fit import fit_population
from kdtune.train import fit

# one separate run: train.fit in its own process, its summary printed as the last line
ALONE = """
import json, sys
from pathlib import Path
from kdtune.config import TrainConfig
from kdtune.train import fit
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
summary = fit(cfg, None, workdir=Path(sys.argv[2]), results=Path(sys.argv[3]))
print(json.dumps({"images_per_s": summary["images_per_s"]}))
"""


def member_configs(base: TrainConfig, members: int) -> list[TrainConfig]:
    """P members: α spread over [0, 1], seeds 0 … P−1, one data seed (the same batches)."""
    out = []
    for m in range(members):
        alpha = m / max(members - 1, 1)
        cfg = TrainConfig.from_dict({**base.to_dict(), "alpha": alpha, "seed": m, "data_seed": 0})
        out.append(cfg)
    return out


def population_speed(configs: list[TrainConfig], results: Path) -> tuple[float, float]:
    """One population: (P × its median epoch's training images/s, all its members' training
    images over the call's wall time, set-up and evaluation included)."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"m{m}" for m in range(len(configs))]
        started = time.perf_counter()
        outcomes = fit_population(configs, workdirs=dirs, results=results)
        wall = time.perf_counter() - started
    speeds = [o.summary["images_per_s"] for o in outcomes if o.summary is not None]
    cfg = configs[0]
    return float(sum(speeds)), len(configs) * cfg.epochs * (cfg.max_train_images or 0) / wall


def separate_speed(configs: list[TrainConfig], results: Path, threads: int) -> tuple[float, float]:
    """P ``train.fit`` processes at once: (the sum of their training images/s, all their
    training images over the wall time from the first start to the last end)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        started = time.perf_counter()
        for m, cfg in enumerate(configs):
            one = {**cfg.to_dict(), "num_threads": threads}
            cmd = [sys.executable, "-c", ALONE, json.dumps(one), f"{tmp}/s{m}", str(results)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - started
    if any(p.returncode for p in procs):
        raise SystemExit(f"a separate run failed: exit codes {[p.returncode for p in procs]}")
    speeds = [json.loads(out.strip().splitlines()[-1])["images_per_s"] for out in outs]
    cfg = configs[0]
    images = len(configs) * cfg.epochs * (cfg.max_train_images or 0)
    return float(sum(speeds)), images / wall


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--members", type=int, default=8, help="P: students in the population")
    p.add_argument("--batch-size", type=int, default=16, help="B: each student's batch")
    p.add_argument("--images", type=int, default=128, help="training images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-steps", type=int, default=10, help="model-only steps per repeat")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--data", default="synthetic", help="synthetic (default) or a COCO root")
    p.add_argument("--views", type=int, default=8, help="K: bank views per image")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--results", type=Path, default=Path("results/bench"))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = args.results.resolve()
    teacher = results / "bench_med_teacher.pt"
    if not teacher.is_file():
        teacher.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": "med", "model": build_model("med").state_dict()}, teacher)
    base = TrainConfig(
        data=args.data,
        level="second",
        epochs=args.epochs,
        eval_every=args.epochs,
        max_train_images=args.images,
        max_val_images=8,
        teacher_checkpoint=str(teacher),
        teacher_views=args.views,
        amp=args.amp,
        batch_size=args.batch_size,
        num_threads=args.threads,
        device=args.device,
    ).validate()
    configs = member_configs(base, args.members)
    # warm-up: decode the data and build the bank once (as a search's driver does)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(configs[1 if args.members > 1 else 0], None, workdir=Path(tmp), results=results)
    warmup_s = time.perf_counter() - started
    bound_cfg = TrainConfig.from_dict(
        {**base.to_dict(), "batch_size": args.members * args.batch_size}
    )
    per_process = max(1, args.threads // args.members)
    pop, pop_wall, sep, sep_wall, bound = [], [], [], [], []
    for r in range(args.repeats):
        summed, over_wall = population_speed(configs, results)
        pop.append(summed)
        pop_wall.append(over_wall)
        summed, over_wall = separate_speed(configs, results, per_process)
        sep.append(summed)
        sep_wall.append(over_wall)
        bound.append(model_only_speed(bound_cfg, steps=args.model_steps))
        print(
            f"repeat {r + 1}: population {pop[-1]:.1f} img/s summed (over wall "
            f"{pop_wall[-1]:.1f}), separate {sep[-1]:.1f} (over wall {sep_wall[-1]:.1f}), "
            f"model only at batch {bound_cfg.batch_size} "
            f"{bound[-1]:.1f}",
            flush=True,
        )
    med = statistics.median
    device = torch.device(args.device)
    figures = {
        "population_images_per_s": med(pop),
        "population_images_per_s_over_wall": med(pop_wall),
        "separate_images_per_s": med(sep),
        "separate_images_per_s_over_wall": med(sep_wall),
        "model_only_images_per_s": med(bound),
        "population_over_separate": med(pop) / med(sep),
        "population_over_separate_over_wall": med(pop_wall) / med(sep_wall),
        "population_share_of_model_only": med(pop) / med(bound),
        "members": args.members,
        "batch_size": args.batch_size,
        "total_batch": bound_cfg.batch_size,
        "images": args.images,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda_peak_memory_bytes": (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
        "amp": args.amp,
        "threads": args.threads,
        "threads_per_separate_process": per_process,
        "warmup_s": warmup_s,
        "population_all": pop,
        "population_over_wall_all": pop_wall,
        "separate_all": sep,
        "separate_over_wall_all": sep_wall,
        "model_only_all": bound,
    }
    emit(figures, args.json)
    return figures


if __name__ == "__main__":
    main()
