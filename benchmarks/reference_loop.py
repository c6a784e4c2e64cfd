"""A reference-style second-level training loop, the baseline kdtune's trial is measured against.

It does what the reference pipeline's loop does, on the same cached images: targets are built
per sample with Python loops over persons and pixels inside a DataLoader, batch 8, and the
teacher (med) runs live in fp32 on every batch. Only the speed of this loop matters; it is not
used by kdtune itself.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kdtune.data import PoseSet
from kdtune.losses import kd_loss
from kdtune.skeleton import LIMBS, NUM_HEATMAPS, NUM_KEYPOINTS, NUM_PAFS


def gaussian_per_pixel(maps: np.ndarray, x: float, y: float, stride: int, sigma: float) -> None:
    """Add one keypoint's Gaussian to a [G, G] map, pixel by pixel as the reference does."""
    grid = maps.shape[0]
    radius = 3 * sigma
    lo_x, hi_x = max(0, int((x - radius) / stride)), min(grid, int((x + radius) / stride) + 1)
    lo_y, hi_y = max(0, int((y - radius) / stride)), min(grid, int((y + radius) / stride) + 1)
    for gy in range(lo_y, hi_y):
        for gx in range(lo_x, hi_x):
            cx, cy = gx * stride + stride / 2 - 0.5, gy * stride + stride / 2 - 0.5
            exponent = ((cx - x) ** 2 + (cy - y) ** 2) / (2 * sigma * sigma)
            if exponent > 4.6052:
                continue
            maps[gy, gx] = max(maps[gy, gx], math.exp(-exponent))


def paf_per_pixel(
    paf: np.ndarray, count: np.ndarray, a: np.ndarray, b: np.ndarray, stride: int, thickness: float
) -> None:
    """Write one limb's unit vector on the cells near the segment, pixel by pixel."""
    grid = paf.shape[1]
    ax, ay, bx, by = a[0] / stride, a[1] / stride, b[0] / stride, b[1] / stride
    length = math.hypot(bx - ax, by - ay)
    if length < 1e-6:
        return
    ux, uy = (bx - ax) / length, (by - ay) / length
    for gy in range(
        max(0, int(min(ay, by) - thickness)), min(grid, int(max(ay, by) + thickness) + 1)
    ):
        for gx in range(
            max(0, int(min(ax, bx) - thickness)), min(grid, int(max(ax, bx) + thickness) + 1)
        ):
            dx, dy = gx - ax, gy - ay
            along = dx * ux + dy * uy
            across = abs(dx * uy - dy * ux)
            if 0 <= along <= length and across <= thickness:
                paf[0, gy, gx] += ux
                paf[1, gy, gx] += uy
                count[gy, gx] += 1


class ReferenceDataset(Dataset):
    def __init__(self, data: PoseSet, stride: int = 8, sigma: float = 7.0):
        self.data, self.stride, self.sigma = data, stride, sigma
        self.grid = data.input_size // stride

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        g, s = self.grid, self.stride
        image = self.data.images[i].float() / 255.0 - 0.5
        kps = self.data.keypoints[i].numpy()
        heat = np.zeros((NUM_HEATMAPS, g, g), dtype=np.float32)
        for person in kps:
            for k in range(NUM_KEYPOINTS):
                if person[k, 2] > 0:
                    gaussian_per_pixel(heat[k], person[k, 0], person[k, 1], s, self.sigma)
        heat[-1] = 1.0 - heat[:-1].max(axis=0)
        paf = np.zeros((NUM_PAFS, g, g), dtype=np.float32)
        for limb, (ka, kb) in enumerate(LIMBS):
            count = np.zeros((g, g), dtype=np.float32)
            sub = paf[2 * limb : 2 * limb + 2]
            for person in kps:
                if person[ka, 2] > 0 and person[kb, 2] > 0:
                    paf_per_pixel(sub, count, person[ka, :2], person[kb, :2], s, 1.0)
            sub /= np.maximum(count, 1.0)
        ignore = self.data.masks[i].float()
        keep = 1.0 - torch.nn.functional.avg_pool2d(ignore[None, None], s)[0]
        return image, torch.from_numpy(heat), torch.from_numpy(paf), keep


def run_reference(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    data: PoseSet,
    *,
    steps: int,
    alpha: float = 0.25,
    batch_size: int = 8,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> float:
    """Train ``steps`` batches the reference way; returns images per second. With ``device``
    (the nets already there) each batch is moved to it, as the reference's loop does."""
    device = device or torch.device("cpu")
    loader = DataLoader(
        ReferenceDataset(data),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
    )
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    teacher.eval()
    student.train()
    seen, done = 0, 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            image, heat, paf, keep = (t.to(device, non_blocking=True) for t in batch)
            with torch.no_grad():
                t_heat, t_paf = teacher(image)[-1]
            losses = kd_loss(
                student(image), heat, paf, keep, alpha=alpha, teacher_heat=t_heat, teacher_paf=t_paf
            )
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            seen += image.shape[0]
            done += 1
            if done >= steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)
