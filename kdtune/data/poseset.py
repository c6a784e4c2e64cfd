"""The compact, decoded form of one split that every trial trains and evaluates on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PoseSet:
    """One split, decoded and letterboxed once into tensors.

    Coordinates are in letterboxed input pixels: ``letterboxed = original * scale + pad``.
    """

    images: torch.Tensor  # uint8 [N, 3, S, S], RGB, letterboxed (pad value 0)
    # float32 [N, P, 18, 3]: OP18 (x, y, v); v 0 unlabelled, 1 occluded, 2 visible;
    # padding persons all 0
    keypoints: torch.Tensor
    # uint8 [N, S, S]: 1 where the loss is ignored (crowds, persons without keypoints,
    # letterbox padding excluded)
    masks: torch.Tensor
    image_ids: torch.Tensor  # int64 [N]: COCO image ids
    scales: torch.Tensor  # float32 [N]
    pads: torch.Tensor  # float32 [N, 2]: (pad_x, pad_y)
    ann_file: str  # the COCO person-keypoints json this split came from (for COCOeval)
    split: str  # "train", "val", ...
    skipped: int = 0  # images that could not be read and were left out

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: torch.Tensor | slice) -> PoseSet:
        """The images at ``index`` (tensor of indices or a slice), as a new set."""
        return PoseSet(
            images=self.images[index],
            keypoints=self.keypoints[index],
            masks=self.masks[index],
            image_ids=self.image_ids[index],
            scales=self.scales[index],
            pads=self.pads[index],
            ann_file=self.ann_file,
            split=self.split,
            skipped=self.skipped,
        )

    def to_original(self, xy: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Map letterboxed ``xy [..., 2]`` of images ``index`` (one per leading row) back to
        original pixels."""
        shape = (-1,) + (1,) * (xy.dim() - 2) + (2,)
        pads = self.pads[index].reshape(shape)
        scales = self.scales[index].reshape((*shape[:-1], 1))
        return (xy - pads) / scales
