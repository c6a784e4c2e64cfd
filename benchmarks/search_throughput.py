"""Throughput of concurrent trials: a search of N trials sharing a GPU against one trial alone.

Reads two finished searches' ``search.json`` (``kdtune search`` with
``benchmarks/gpu_quarter.yaml``, and the same file with one trial holding the whole GPU) and
reports, per search, each trial's training images/s (the median over its evaluations, as the
trial measured it: evaluation excluded) and their sum, and the ratio of the concurrent sum to the
lone trial's figure.

    python benchmarks/search_throughput.py --one results/gpu/gpu_whole \\
        --many results/gpu/gpu_quarter --json results/gpu/search_throughput.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from figures import emit

from kdtune.results import SEARCH_FILE, SearchResult


def summarize(folder: Path) -> dict[str, Any]:
    """Per-trial images/s (median over its evaluations), their sum, and the trials' states."""
    result = SearchResult.load(folder / SEARCH_FILE)
    speeds = {}
    for trial in result.trials:
        seen = [h["perf/images_per_s"] for h in trial.history if "perf/images_per_s" in h]
        if seen:
            speeds[trial.trial_id] = statistics.median(seen)
    return {
        "trials": len(result.trials),
        "states": {k: v for k, v in result.counts().items() if v},
        "images_per_s": speeds,
        "sum_images_per_s": sum(speeds.values()),
        "trial_wall_s": {t.trial_id: t.wall_s for t in result.trials},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", type=Path, required=True, help="the lone trial's search folder")
    parser.add_argument("--many", type=Path, required=True, help="the concurrent search folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    one, many = summarize(args.one), summarize(args.many)
    figures = {
        "one": one,
        "many": many,
        "concurrent_over_one": (
            many["sum_images_per_s"] / one["sum_images_per_s"] if one["sum_images_per_s"] else None
        ),
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()
