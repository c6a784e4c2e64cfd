"""A finished search's GPU figures: summed training images/s and GPU busy %, over its trials
and over its confirmation, each stage on its own and both together.

Reads the search folder's Ray Tune experiments (``<name>/ray`` for the trials, ``<name>/confirm``
for the confirmation): each trial's ``result.json`` gives when it started (its first report's
``timestamp`` less its ``time_total_s``), when it last reported, and the epochs it trained. A
stage spans its first trial's start to its last trial's last report; its summed training
images/s is its trials' epochs × the training images over that span (evaluations included in the
span, so it is a search's throughput, not a trial's). With nvidia-smi's samples
(``timestamp, memory.used, utilization.gpu``, as ``gpu_check.sh`` records them), the GPU busy %
is their mean within each span::

    python benchmarks/search_gpu_figures.py results/gpu_full --train-images 4096 \
        --samples /tmp/gpu_check.X/gpu_samples.csv --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from figures import emit

STAGES = {"search": "ray", "confirm": "confirm"}


def trial_spans(folder: Path) -> list[tuple[float, float, int]]:
    """``(start, end, epochs)`` of each trial under ``folder`` (its ``result.json`` files); a
    population trial's epochs are its members' summed (:func:`trained_epochs`)."""
    spans = []
    for result in sorted(folder.rglob("result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "timestamp" in r]
        if not rows:
            continue
        first, last = rows[0], rows[-1]
        start = float(first["timestamp"]) - float(first.get("time_total_s", 0.0))
        spans.append((start, float(last["timestamp"]), trained_epochs(rows)))
    return spans


def trained_epochs(rows: list[dict[str, Any]]) -> int:
    """The epochs one trial trained, from its results: the last epoch it reported, or for a
    population trial (results with each member's metrics under ``m<k>|<name>``) the sum over
    its members of the last epoch each reported (a pruned member stops counting)."""
    members: dict[str, float] = {}
    for r in rows:
        for key in r:
            member, bar, name = key.partition("|")
            if bar and member[:1] == "m" and member[1:].isdigit() and name == "val/ap":
                members[member] = max(members.get(member, 0.0), float(r.get("epoch", 0)))
    if members:
        return int(sum(members.values()))
    return int(max(float(r.get("epoch", 0)) for r in rows))


def busy(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """The mean GPU utilization % of the samples within ``[start, end]``."""
    inside = [u for t, u in samples if start <= t <= end]
    return sum(inside) / len(inside) if inside else None


def read_samples(path: Path | None) -> list[tuple[float, float]]:
    """nvidia-smi's ``timestamp, memory.used, utilization.gpu`` rows as (unix time, %)."""
    if path is None or not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) < 3:
                continue
            try:
                when = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                out.append((when, float(row[2])))
            except ValueError:
                continue
    return out


def figures(search: Path, train_images: int, samples: Path | None) -> dict[str, Any]:
    gpu = read_samples(samples)
    out: dict[str, Any] = {"search": str(search), "train_images": train_images}
    every: list[tuple[float, float, int]] = []
    for stage, sub in STAGES.items():
        spans = trial_spans(search / sub)
        every += spans
        out[stage] = _stage(spans, train_images, gpu)
    out["both"] = _stage(every, train_images, gpu)
    return out


def _stage(
    spans: list[tuple[float, float, int]], images: int, gpu: list[tuple[float, float]]
) -> dict[str, Any]:
    if not spans:
        return {"trials": 0}
    start, end = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    epochs = sum(n for _, _, n in spans)
    wall = max(end - start, 1e-9)
    return {
        "trials": len(spans),
        "epochs": epochs,
        "wall_s": wall,
        "summed_images_per_s": epochs * images / wall,
        "gpu_busy_pct": busy(gpu, start, end),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("search", type=Path, help="the search's folder (results/<name>)")
    p.add_argument("--train-images", type=int, required=True, help="training images per epoch")
    p.add_argument("--samples", type=Path, default=None, help="nvidia-smi's samples (csv)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    emit(figures(args.search, args.train_images, args.samples), args.json)


if __name__ == "__main__":
    main()
