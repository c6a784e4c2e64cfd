"""What ``kdtune eval --teacher-input-size 368`` loses by shrinking a teacher's maps.

A perfect 368-input net (its maps are the ground truth's, drawn at its own 46×46 grid with the
reference teacher's sigma of 7 of its pixels) is evaluated three ways on a split: decoded at its
own grid (what ``kdtune eval`` does), its maps shrunk to the student's 16×16 (what it did), and,
for scale, perfect maps at the student's grid (the decoding ceiling, ``kdtune data ceiling``).

    python benchmarks/eval_native_grid.py --data synthetic --split val
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from figures import emit
from torch import nn

from kdtune.config import TrainConfig
from kdtune.data import PoseSet
from kdtune.data.sources import resolve_data
from kdtune.models import AtInputSize
from kdtune.predict import evaluate_model
from kdtune.targets import make_targets


class IdealNet(nn.Module):
    """The ground-truth maps of the images it is fed, in order, as a net fed ``size`` input."""

    def __init__(self, data: PoseSet, size: int, sigma: float) -> None:
        super().__init__()
        self.keypoints, self.size, self.sigma, self.seen = data.keypoints, size, sigma, 0
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kps = self.keypoints[self.seen : self.seen + x.shape[0]].clone()
        self.seen += x.shape[0]
        ratio = 128 / self.size
        labelled = kps[..., 2:] > 0
        kps[..., :2] = torch.where(labelled, (kps[..., :2] + 0.5) / ratio - 0.5, kps[..., :2])
        return [make_targets(kps, self.size, 8, self.sigma, 1.0 / ratio)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=368, help="the net's input size")
    parser.add_argument("--sigma", type=float, default=7.0, help="in the net's input pixels")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = resolve_data(args.data, args.split, 128, args.results)
    cfg = TrainConfig(data=args.data)
    cpu = torch.device("cpu")
    grid = cfg.input_size // cfg.stride
    ap = {
        "own_grid": evaluate_model(
            AtInputSize(IdealNet(data, args.size, args.sigma), args.size, grid=None),
            data, cfg, cpu, prefix="x", net_input_size=args.size,
        )["x/ap"],
        "shrunk_to_student_grid": evaluate_model(
            AtInputSize(IdealNet(data, args.size, args.sigma), args.size, grid=grid),
            data, cfg, cpu, prefix="x",
        )["x/ap"],
        "student_grid_ceiling": evaluate_model(
            IdealNet(data, 128, cfg.sigma), data, cfg, cpu, prefix="x"
        )["x/ap"],
    }  # fmt: skip
    figures = {"data": args.data, "split": args.split, "images": len(data), "ap": ap}
    emit(figures, args.json)


if __name__ == "__main__":
    main()
