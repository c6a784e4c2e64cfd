"""What evaluating a run costs: one quickstart-budget run (its space file's train block and
budget) trained with validation every 1, every 2 (the quickstart's trials) and only at its end
(the confirmation's runs), in turn, ``--repeats`` times; medians and their ratios.

    python benchmarks/bench_eval_cost.py --repeats 3

The runs share the data, the shipped teacher and its bank (built once, before the timing), so
the figures are training plus evaluation alone; each run gets one torch thread, as a trial
does. Evaluation does not change what a run learns (``tests/test_train.py``), so the final AP
must come out the same for every setting: the script checks it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 0], help="0: at the end")
    parser.add_argument("--schedule", default="fixed:0.75")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    import torch

    from kdtune.config import TrainConfig
    from kdtune.search.prepare import teacher_and_bank
    from kdtune.space import load_space
    from kdtune.train import fit

    torch.set_num_threads(1)
    base = load_space(args.space).trial_config({"schedule": args.schedule, "num_threads": 1})
    cfg = TrainConfig.from_dict(base)
    teacher_and_bank(cfg, args.results, print)  # cached: every run below reads the same bank
    times: dict[int, list[float]] = {e: [] for e in args.every}
    finals: dict[int, set[float]] = {e: set() for e in args.every}
    for r in range(args.repeats):
        for every in args.every:
            eval_every = every or cfg.epochs
            run = TrainConfig.from_dict({**base, "eval_every": eval_every})
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                summary = fit(run, None, workdir=Path(tmp), results=args.results)
                times[every].append(time.perf_counter() - start)
            finals[every].add(round(summary["final"]["val/ap"], 6))
            print(f"repeat {r + 1}: every {eval_every:2d} epochs: {times[every][-1]:.1f} s")
    slowest = max(args.every, key=lambda e: statistics.median(times[e]))
    base_s = statistics.median(times[slowest])
    for every in args.every:
        med = statistics.median(times[every])
        what = "at the end only" if every == 0 else f"every {every} epoch(s)"
        print(
            f"{what:18s} median {med:6.1f} s (min {min(times[every]):.1f}, max "
            f"{max(times[every]):.1f}); {med / base_s:.2f} of the slowest; final AP {finals[every]}"
        )
    aps = set().union(*finals.values())
    print("final AP identical across settings" if len(aps) == 1 else f"final APs differ: {aps}")


if __name__ == "__main__":
    main()
