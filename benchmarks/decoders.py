"""kdtune's decoder against the reference pipeline's (``decoder: kdtune`` vs ``reference``) on
the same maps, with a paired bootstrap interval of the difference.

The maps are a checkpoint's (run once) or, without one, the ground-truth targets themselves
(the ceiling of ``kdtune data ceiling``). Both decoders' detections are scored by COCO keypoint
AP; their difference is bootstrapped over images (the same replicates for both).

    python benchmarks/decoders.py --data synthetic --split test
    python benchmarks/decoders.py --data synthetic --split test \
        --checkpoint kdtune/teachers/med.pt --arch med
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kdtune.config import DECODERS, TrainConfig
from kdtune.data.sources import resolve_data
from kdtune.evaluate import (
    bootstrap_replicates,
    coco_keypoint_ap,
    decode_maps,
    detections_for,
    load_coco,
)
from kdtune.models import load_checkpoint
from kdtune.predict import predict_maps
from kdtune.targets import make_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", type=Path, default=None, help="else the ground truth")
    parser.add_argument("--arch", choices=["teacher", "med", "tiny"], default=None)
    parser.add_argument("--samples", type=int, default=200, help="bootstrap replicates")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    cfg = TrainConfig(data=args.data)
    data = resolve_data(args.data, args.split, cfg.input_size, args.results)
    if args.checkpoint is None:
        heat, paf = make_targets(data.keypoints, cfg.input_size, cfg.stride, cfg.sigma)
        maps = "ground truth"
    else:
        if args.arch is None:
            parser.error("--checkpoint needs --arch")
        model = load_checkpoint(args.checkpoint, args.arch)
        heat, paf, _ = predict_maps(model, data, cfg, torch.device("cpu"))
        maps = f"{args.arch} {args.checkpoint}"
    coco = load_coco(data.ann_file)
    ids = data.image_ids.tolist()
    dets: dict[str, list[dict]] = {}
    ap: dict[str, float] = {}
    out: dict[str, object] = {"data": args.data, "split": args.split, "maps": maps}
    out["images"] = len(data)
    for decoder in DECODERS:
        start = time.perf_counter()
        dets[decoder] = detections_for(decode_maps(heat, paf, cfg.stride, decoder), data)
        out[f"{decoder}/decode_s"] = round(time.perf_counter() - start, 2)
        ap[decoder] = coco_keypoint_ap(coco, dets[decoder], ids)["ap"]
        out[f"{decoder}/ap"] = round(ap[decoder], 4)
    reps = bootstrap_replicates(coco, dets, ids, samples=args.samples, seed=0)
    diff = np.subtract(reps["kdtune"], reps["reference"])
    low, high = np.quantile(diff, [0.025, 0.975])
    out["kdtune_minus_reference"] = round(ap["kdtune"] - ap["reference"], 4)
    out["difference_95ci"] = [round(float(low), 4), round(float(high), 4)]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
