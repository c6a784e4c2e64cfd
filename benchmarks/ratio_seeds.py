"""The question kdtune exists to answer, asked on the embedded default with seeds.

Trains the tiny student from the shipped med teacher (exact bank targets) at the reference's
named ratios α ∈ {1.0, 0.5, 0.25, 0.1, 0.0} and the adaptive β 0.9 → 0.5 schedule, each with
``--seeds`` training seeds, on one budget, and reports the final val AP of each as mean ± sd,
and each configuration's paired difference to α = 1 (ground truth only; same seeds, same
images, same views), mean ± sd over seeds.

``--level first`` asks the same of the first level: the med student from the shipped

Lightweight-OpenPose teacher, with the reference's α = 0.3 in place of 0.25.

Runs ``--workers`` trials at once with one torch thread each.

    python benchmarks/ratio_seeds.py --seeds 3 --json results/bench/ratio_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from figures import save

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

    torch.set_num_threads(job.pop("threads"))
    from kdtune.config import TrainConfig
    from kdtune.train import fit

    work = Path(job.pop("work"))
    results = Path(job.pop("results"))
    label = job.pop("label")
    summary_file = work / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        summary = fit(TrainConfig.from_dict(job), None, workdir=work, results=results)
    return {
        "label": label,
        "schedule": job["schedule"],
        "seed": job["seed"],
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

    teacher_and_bank(TrainConfig.from_dict({**budget, "schedule": "fixed:0.75"}), results, print)
    jobs = [
        {
            **budget,
            "schedule": schedule,
            "seed": seed,
            "label": label,
            "threads": max(1, (os.cpu_count() or 1) // args.workers),
            # a finished run is reused only by a rerun of the same level and budget
            "work": str(
                results
                / f"ratio_seeds_{args.level}_{args.train_images}x{args.epochs}"
                / f"{schedule.replace(':', '_')}-s{seed}"
            ),
            "results": str(results),
        }
        for seed in range(args.seeds)
        for label, schedule in configs.items()
    ]
    with ProcessPoolExecutor(args.workers) as pool:
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
    save({"budget": budget, "seeds": args.seeds, "table": table, "runs": rows}, args.json)


if __name__ == "__main__":
    main()
