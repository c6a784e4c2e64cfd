"""The question kdtune exists to answer, asked on the embedded default with seeds.

Trains the tiny student from the shipped med teacher (exact bank targets) at the reference's
named ratios α ∈ {1.0, 0.5, 0.25, 0.1, 0.0} and the adaptive β 0.9 → 0.5 schedule, each with
``--seeds`` training seeds, on one budget, and reports the final val AP of each as mean ± sd,
and each configuration's paired difference to α = 1 (ground truth only; same seeds, same
images, same views), mean ± sd over seeds.

``--level first`` asks the same of the first level: the med student from the shipped
Lightweight-OpenPose teacher, with the reference's α = 0.3 in place of 0.25.

Runs ``--workers`` trials at once with one torch thread each. A finished run is reused only
when everything that shapes it matches: its config, the data, the validation images, the
teacher's weights, kdtune's source, the device and the threads (``reuse.py``, the key
``known_answer.py`` uses too).

    python benchmarks/ratio_seeds.py --seeds 3 --json results/bench/ratio_seeds.json
"""

from __future__ import annotations

import argparse
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from figures import save
from reuse import run_folder, shared_parts, train_or_reuse

CONFIGS: dict[str, str] = {
    "α 1.0 (ground truth only)": "fixed:0",
    "α 0.5": "fixed:0.5",
    "α 0.25 (reference)": "fixed:0.75",
    "α 0.1": "fixed:0.9",
    "α 0.0 (teacher only)": "fixed:1",
    "adaptive β 0.9 → 0.5": "linear:0.9:0.5",
}
# the first level: the reference picked α = 0.3 there
FIRST_CONFIGS: dict[str, str] = {
    ("α 0.3 (reference)" if label.startswith("α 0.25") else label): (
        "fixed:0.7" if label.startswith("α 0.25") else schedule
    )
    for label, schedule in CONFIGS.items()
}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(job["threads"])
    summary, _ = train_or_reuse(job["config"], Path(job["work"]), Path(job["results"]))
    return {
        "label": job["label"],
        "schedule": job["config"]["schedule"],
        "seed": job["config"]["seed"],
        "val/ap": summary["final"]["val/ap"],
        "wall_s": summary["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--level",
        choices=["second", "first"],
        default="second",
        help="second: tiny from the shipped med; first: med from the shipped Lightweight OpenPose",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--val-images", type=int, default=None, help="default: the whole split")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = args.results.resolve()
    configs = CONFIGS if args.level == "second" else FIRST_CONFIGS
    budget = {
        "level": args.level,
        "epochs": args.epochs,
        "eval_every": args.epochs,
        "max_train_images": args.train_images,
        "max_val_images": args.val_images,
        "amp": True,
    }
    # the bank (and data) once, before the workers start, so that no two build it
    from kdtune.config import TrainConfig
    from kdtune.search.prepare import teacher_and_bank

    base = TrainConfig.from_dict({**budget, "schedule": "fixed:0.75"}).to_dict()
    teacher_and_bank(TrainConfig.from_dict(base), results, print)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    # a finished run is reused only when everything that shapes it matches (reuse.py)
    shared = shared_parts(base, results, threads)
    jobs = []
    for seed in range(args.seeds):
        for label, schedule in configs.items():
            config = {**base, "schedule": schedule, "seed": seed}
            jobs.append(
                {
                    "config": config,
                    "label": label,
                    "threads": threads,
                    "work": str(run_folder(results / "ratio_seeds_runs", config, shared)),
                    "results": str(results),
                }
            )
    # spawned, not forked: a fork of a process whose torch already ran threads can hang
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(run_one, jobs))
    by_label: dict[str, dict[int, float]] = {}
    for row in rows:
        by_label.setdefault(row["label"], {})[row["seed"]] = row["val/ap"]
    base = by_label[next(iter(configs))]
    table = []
    pair = "tiny from the shipped med" if args.level == "second" else "med from the shipped LW"
    print(
        f"\n{pair}, bank targets; "
        f"{args.train_images} images × {args.epochs} epochs, "
        f"{args.seeds} seeds; final val AP"
    )
    for label, aps in by_label.items():
        values = [aps[s] for s in sorted(aps)]
        diffs = [aps[s] - base[s] for s in sorted(aps)]
        entry = {
            "label": label,
            "schedule": configs[label],
            "aps": values,
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "diff_vs_alpha1_mean": statistics.mean(diffs),
            "diff_vs_alpha1_sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        }
        table.append(entry)
        print(
            f"{label:28s} {entry['mean']:.3f} ± {entry['sd']:.3f}   "
            f"vs α 1.0: {entry['diff_vs_alpha1_mean']:+.3f} ± {entry['diff_vs_alpha1_sd']:.3f}   "
            f"({', '.join(f'{v:.3f}' for v in values)})"
        )
    figures = {
        "budget": budget,
        "shared": shared,
        "seeds": args.seeds,
        "table": table,
        "runs": rows,
    }
    save(figures, args.json)


if __name__ == "__main__":
    main()
