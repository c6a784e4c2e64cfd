"""Search efficiency: a pruned TPE search against the exhaustive seed-scenario grid.

Both searches run on the synthetic data with fixed seeds, the same teacher (trained once into
the shared cache), the same training settings and the same epochs per trial. Reported: the
epochs each search spent and the best validation AP each found, and whether the pruned search
came within ``--tolerance`` AP of the grid's best for at most ``--epoch-share`` of its epochs.

    python benchmarks/bench_search.py                      # as the files say
    python benchmarks/bench_search.py --max-epochs 6 --images 256   # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from figures import emit

from kdtune import api

HERE = Path(__file__).resolve().parent
GRID = HERE.parent / "search_spaces" / "seed_scenarios.yaml"
PRUNED = HERE / "pruned_tpe.yaml"


def adjusted(path: Path, folder: Path, max_epochs: int | None, images: int | None) -> Path:
    """A copy of a space file with the budget and data size overridden."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    if max_epochs:
        raw["budget"]["max_epochs"] = max_epochs
    if images:
        raw.setdefault("train", {})["max_train_images"] = images
    out = folder / path.name
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def figures(outcome: api.SearchOutcome) -> dict[str, Any]:
    result = outcome.result
    best = result.best
    return {
        "name": result.name,
        "trials": len(result.trials),
        "states": result.counts(),
        "epochs_spent": result.epochs_spent(),
        "best_ap": None if best is None else best.value(result.metric),
        "best_config": None if best is None else best.config.get("schedule"),
        "wall_s": result.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--epoch-share", type=float, default=0.4)
    parser.add_argument("--results", type=Path, default=Path("results/bench_search"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = args.results.resolve()
    for name in ("seed_scenarios", "pruned_tpe"):  # each run starts afresh; the cache stays
        shutil.rmtree(results / name, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        grid_file = adjusted(GRID, Path(tmp), args.max_epochs, args.images)
        pruned_file = adjusted(PRUNED, Path(tmp), args.max_epochs, args.images)
        grid = figures(api.search(grid_file, results=results, progress=False, log=print))
        pruned = figures(api.search(pruned_file, results=results, progress=False, log=print))
    share = pruned["epochs_spent"] / max(grid["epochs_spent"], 1)
    gap = (grid["best_ap"] or 0.0) - (pruned["best_ap"] or 0.0)
    summary = {
        "grid": grid,
        "pruned_tpe": pruned,
        "epoch_share": share,
        "ap_gap": gap,
        "aim_met": share <= args.epoch_share and gap <= args.tolerance,
    }
    emit(summary, args.json)


if __name__ == "__main__":
    main()
