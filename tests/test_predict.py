"""What a net predicts on a split: a net fed another input size is decoded at its own grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kdtune.config import TrainConfig
from kdtune.data import PoseSet
from kdtune.data.coco import load_split
from kdtune.models import AtInputSize
from kdtune.predict import evaluate_model, seen_at_size
from kdtune.targets import make_targets

TEACHER_INPUT = 368  # the reference fed its teacher 368×368: maps at 46×46


class IdealNet(nn.Module):
    """Returns the ground-truth maps of the images it is fed, in order, at ``size`` input: a
    perfect net, built like the reference's teacher targets (sigma 7 in its own pixels)."""

    def __init__(self, data: PoseSet, size: int) -> None:
        super().__init__()
        self.keypoints, self.size, self.seen = data.keypoints, size, 0
        self.anchor = nn.Parameter(torch.zeros(1))  # something to find the device by

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert x.shape[-1] == self.size
        kps = self.keypoints[self.seen : self.seen + x.shape[0]].clone()
        self.seen += x.shape[0]
        ratio = self.keypoints.new_tensor(128 / self.size)
        labelled = kps[..., 2:] > 0
        kps[..., :2] = torch.where(labelled, (kps[..., :2] + 0.5) / ratio - 0.5, kps[..., :2])
        return [make_targets(kps, self.size, 8, 7.0, float(1 / ratio))]


@pytest.fixture(scope="module")
def val(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> PoseSet:
    return load_split(synth_root, "val", 128, cache_dir=tmp_path_factory.mktemp("cache"))


def test_eval_decodes_a_368_input_net_at_its_own_grid(synth_root: Path, val: PoseSet) -> None:
    cfg = TrainConfig(data=str(synth_root))
    cpu = torch.device("cpu")
    native = AtInputSize(IdealNet(val, TEACHER_INPUT), TEACHER_INPUT, grid=None)
    shrunk = AtInputSize(IdealNet(val, TEACHER_INPUT), TEACHER_INPUT, grid=16)
    at_native = evaluate_model(native, val, cfg, cpu, net_input_size=TEACHER_INPUT)
    at_16 = evaluate_model(shrunk, val, cfg, cpu)
    ceiling = evaluate_model(IdealNet(val, 128), val, cfg, cpu)  # ideal maps at the 16 grid
    # the 46×46 maps hold more than 16×16 ones; shrinking them flattens every peak
    assert at_native["val/ap"] >= ceiling["val/ap"] > at_16["val/ap"]
    assert all(torch.isfinite(torch.tensor(v)) for v in at_native.values())


def test_seen_at_size_takes_resized_pixels_to_the_original(val: PoseSet) -> None:
    index = torch.arange(len(val))
    xy128 = torch.rand(len(val), 5, 2) * 128
    ratio = 128 / TEACHER_INPUT
    xy368 = (xy128 + 0.5) / ratio - 0.5  # the same points in the 368-pixel resized image
    seen = seen_at_size(val, TEACHER_INPUT)
    torch.testing.assert_close(seen.to_original(xy368, index), val.to_original(xy128, index))
