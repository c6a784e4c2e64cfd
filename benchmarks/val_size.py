"""How many validation images a search needs: seed spread against evaluation noise.

One configuration (default: the tiny student at α = 1, on the quickstart's budget) is trained
with ``--seeds`` training seeds on the default set's first ``--train-images`` images. Each final
model is evaluated on the first n images of a large synthetic validation split, for each n in
``--sizes``. Reported per n:

- the mean val AP over seeds and its seed-to-seed standard deviation;
- the bootstrap standard error of one model's AP over images (evaluation noise);
- the bootstrap standard error of the *paired* difference between two seeds' models on the same
  images, the noise a comparison of two configurations carries from its validation images;
- the wall time of one evaluation (decoding and COCOeval).

The training images are the default set's (every synthetic image comes from its own seeded
stream), so only the validation split is larger than the default's.

    python benchmarks/val_size.py --seeds 3 --json results/bench/val_size.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdtune.config import TrainConfig
from kdtune.data.coco import load_split
from kdtune.data.synth import write_synthetic
from kdtune.evaluate import bootstrap_replicates, coco_keypoint_ap, load_coco
from kdtune.models import load_checkpoint
from kdtune.predict import predict_detections
from kdtune.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--schedule", default="fixed:0", help="β schedule (default α = 1)")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--sizes", default="64,128,256,512,1024")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates")
    parser.add_argument("--amp", action="store_true", default=True)
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = args.results.resolve()
    root = results / f"synth-val{max(sizes)}"
    if not (root / "annotations").is_dir():
        write_synthetic(root, n_train=args.train_images, n_val=max(sizes), n_test=1, seed=0)
    val = load_split(root, "val", 128, results / "cache" / "data")

    detections: dict[str, list[dict[str, Any]]] = {}
    for seed in range(args.seeds):
        work = results / "val_size" / f"seed{seed}"
        if not (work / "model.pt").is_file():
            cfg = TrainConfig(
                level="second",
                schedule=args.schedule,
                data=str(root),
                epochs=args.epochs,
                eval_every=args.epochs,
                max_train_images=args.train_images,
                max_val_images=8,
                seed=seed,
                amp=args.amp,
            )
            fit(cfg, None, workdir=work, results=results, log=print)
        model = load_checkpoint(work / "model.pt", "tiny")
        cfg = TrainConfig(amp=args.amp)
        with torch.inference_mode():
            detections[f"seed{seed}"] = predict_detections(model, val, cfg, torch.device("cpu"))

    gt = load_coco(val.ann_file)
    ids = val.image_ids.tolist()
    rows = []
    for n in sizes:
        subset = ids[:n]
        started = time.perf_counter()
        aps = [coco_keypoint_ap(gt, d, subset)["ap"] for d in detections.values()]
        eval_s = (time.perf_counter() - started) / len(aps)
        reps = bootstrap_replicates(gt, detections, subset, samples=args.bootstrap, seed=0)
        one_se = statistics.mean(float(np.std(v, ddof=1)) for v in reps.values())
        diff = np.array(reps["seed0"]) - np.array(reps["seed1"])
        rows.append(
            {
                "images": n,
                "ap_mean": statistics.mean(aps),
                "ap_seed_sd": statistics.stdev(aps) if len(aps) > 1 else 0.0,
                "aps": aps,
                "bootstrap_se": one_se,
                "paired_diff_se": float(np.std(diff, ddof=1)),
                "eval_s": eval_s,
            }
        )
        r = rows[-1]
        print(
            f"{n:5d} images: AP {r['ap_mean']:.3f} ± {r['ap_seed_sd']:.3f} (seed sd), "
            f"bootstrap SE {r['bootstrap_se']:.3f}, "
            f"paired-difference SE {r['paired_diff_se']:.3f}, "
            f"eval {r['eval_s']:.2f} s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"results": str(results)}, "rows": rows},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
