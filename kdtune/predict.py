"""What a net predicts on a whole split: its final-stage maps, its ground-truth loss, its COCO
keypoint AP figures and detections; and the device a net runs on. Used by the trial's
evaluations, ``kdtune eval`` (:mod:`kdtune.checkpoint_ap`), the held-out check and the search
driver's look at its teacher."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.augment import normalize
from kdtune.config import TrainConfig
from kdtune.data import PoseSet
from kdtune.errors import KdtuneError
from kdtune.losses import kd_loss
from kdtune.targets import make_targets


def pick_device(name: str) -> torch.device:
    """The device a config's ``device`` names (``auto``: CUDA where present, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KdtuneError("device: cuda was asked for but no CUDA device is present")
    return torch.device(name)


def evaluate_model(
    model: nn.Module,
    data: PoseSet,
    cfg: TrainConfig,
    device: torch.device | None = None,
    prefix: str = "val",
    detections: list[dict[str, Any]] | None = None,
    net_input_size: int | None = None,
) -> dict[str, float]:
    """Loss (ground truth L2) and COCO keypoint AP figures of ``model`` on ``data``, named
    ``<prefix>/loss``, ``<prefix>/ap`` ...; the detections scored are appended to
    ``detections`` when one is given.

    ``net_input_size``: ``model`` resizes the images to that size and returns its maps at its
    own grid (``AtInputSize(net, size, grid=None)``); they are decoded there, at the net's
    stride in its input's pixels, and the loss is taken on them resized to the student's grid.
    """
    from kdtune.evaluate import score_maps

    device = device or next(model.parameters()).device
    heat, paf, loss = predict_maps(model, data, cfg, device)
    seen = data
    if net_input_size and net_input_size != data.input_size:
        seen = seen_at_size(data, net_input_size)
    figures, found = score_maps(heat, paf, seen, cfg.stride, cfg.decoder)
    if detections is not None:
        detections.extend(found)
    metrics = {f"{prefix}/{k}": float(v) for k, v in figures.items()}
    metrics[f"{prefix}/loss"] = loss
    return metrics


def seen_at_size(data: PoseSet, size: int) -> PoseSet:
    """``data`` as a net sees it after its images are resized to ``size`` (bicubic,
    ``align_corners=False``): scales and pads that take the resized image's pixels to the
    original ones, so that its detections decode straight to COCO coordinates."""
    ratio = data.input_size / size  # a resized pixel p is letterboxed (p + 0.5) * ratio - 0.5
    return replace(data, scales=data.scales / ratio, pads=(data.pads + 0.5 - 0.5 * ratio) / ratio)


def predict_detections(
    model: nn.Module, data: PoseSet, cfg: TrainConfig, device: torch.device | None = None
) -> list[dict[str, Any]]:
    """COCO keypoint results of ``model`` on every image of ``data``, in original coordinates."""
    from kdtune.evaluate import decode_maps, detections_for

    device = device or next(model.parameters()).device
    heat, paf, _ = predict_maps(model, data, cfg, device)
    return detections_for(decode_maps(heat, paf, cfg.stride, cfg.decoder), data)


def keep_mask(ignore: torch.Tensor, stride: int) -> torch.Tensor:
    """Per-cell loss weight [B, 1, G, G]: 1 minus the ignored fraction of the cell's pixels."""
    return 1.0 - F.avg_pool2d(ignore.unsqueeze(1).float(), stride)


def predict_maps(
    model: nn.Module, data: PoseSet, cfg: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Final-stage maps for every image of ``data`` (on the CPU) and the mean GT L2 per image."""
    model.eval()
    heats, pafs, loss_sum = [], [], 0.0
    with torch.inference_mode():
        for start in range(0, len(data), 64):
            sl = slice(start, start + 64)
            x = normalize(data.images[sl].to(device))
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = (
                torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if cfg.amp
                else contextlib.nullcontext()
            )
            with ctx:
                heat, paf = model(x)[-1]
            heat, paf = heat.float(), paf.float()
            gt_heat, gt_paf = make_targets(
                data.keypoints[sl].to(device),
                cfg.input_size,
                cfg.stride,
                cfg.sigma,
                cfg.paf_thickness,
            )
            keep = keep_mask(data.masks[sl].to(device), cfg.stride)
            at_grid = [(_to_grid(heat, gt_heat), _to_grid(paf, gt_paf))]  # maps at another grid
            loss = kd_loss(
                at_grid, gt_heat, gt_paf, keep, alpha=1.0, teacher_heat=None, teacher_paf=None
            )
            loss_sum += float(loss["student"]) * x.shape[0]
            heats.append(heat.cpu())
            pafs.append(paf.cpu())
    model.train()
    n = max(len(data), 1)
    if not heats:
        grid = cfg.input_size // cfg.stride
        return torch.zeros(0, 19, grid, grid), torch.zeros(0, 38, grid, grid), 0.0
    return torch.cat(heats), torch.cat(pafs), loss_sum / n


def _to_grid(maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``maps`` at ``like``'s grid (bilinear), for the loss of a net that maps at another."""
    if maps.shape[-2:] == like.shape[-2:]:
        return maps
    return F.interpolate(maps, size=like.shape[-2:], mode="bilinear", align_corners=False)
