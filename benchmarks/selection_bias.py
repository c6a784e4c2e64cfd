"""The bias of judging a confirmation on the validation images that selected its winner.

A search picks the best of K configurations of equal truth by one run each on N validation
images; the confirmation trains the winner and the seed default again with R new seeds. Judged
on the same images, the winner keeps its lucky configuration-by-image part (which new seeds do
not redraw); judged on fresh images of the same kind, it does not. The script measures, over
replicates, the mean difference winner − default on the same images and on fresh ones (the
truth is 0), and how often the verdict block claims "beats" at its 5 %.

Simulated configurations are scored as real ImageMatches (benchmarks/verdict_calibration.py's
model: a person's quality is the configuration's mean + a seed shift + configuration-by-image
noise + image difficulty + seed-by-image noise, in logits).

    PYTHONPATH=. python benchmarks/selection_bias.py --replicates 200
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kdtune.verdict import verdict_block


def _simulator() -> Any:
    path = Path(__file__).resolve().parent / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verdict_calibration", module)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--configs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--image-sd", type=float, default=0.3, help="config×image sd, logit")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    sim = _simulator()
    sc = sim.Scenario(
        "selection", seed_sd=0.15, image_sd=args.image_sd, run_sd=0.5, images=args.images
    )
    names = [f"fixed:{i / 10:g}" for i in range(1, args.configs)] + ["fixed:0.75"]
    rng = np.random.default_rng(0)
    same, fresh, claims_same, claims_fresh = [], [], 0, 0
    for _ in range(args.replicates):
        selecting = sim.draw_world(sc, names, rng)
        search = {c: sim.matches(selecting, c, 0.0, sc, rng).ap() for c in names[:-1]}
        winner = max(search, key=lambda c: search[c])
        judging = sim.draw_world(sc, names, rng)  # fresh images of the same kind
        for world, out in ((selecting, same), (judging, fresh)):
            runs = {
                c: {s: sim.matches(world, c, 0.0, sc, rng) for s in range(args.seeds)}
                for c in (winner, "fixed:0.75")
            }
            out.append(
                np.mean([runs[winner][s].ap() - runs["fixed:0.75"][s].ap() for s in runs[winner]])
            )
            block = verdict_block(runs, default="fixed:0.75", samples=args.samples)
            beats = any(c["outcome"] in ("beats", "trails") for c in block["comparisons"])
            if world is selecting:
                claims_same += beats
            else:
                claims_fresh += beats
    n = args.replicates
    for name, diffs, claims in (("same images", same, claims_same), ("fresh", fresh, claims_fresh)):
        d = np.asarray(diffs)
        print(
            f"{name:12s} winner − default: mean {d.mean():+.4f} AP "
            f"(se {d.std(ddof=1) / np.sqrt(n):.4f}); false claims {claims / n:.3f} ({n} replicates)"
        )


if __name__ == "__main__":
    main()
