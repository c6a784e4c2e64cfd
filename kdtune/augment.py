"""Batched geometric augmentation: one random scale, rotation and flip per sample, applied the
same way to images, keypoints, ignore masks and a teacher's output maps.

Coordinates: pixel ``i`` of an ``S``-pixel image has its centre at coordinate ``i`` (the
convention of :mod:`kdtune.targets`), so the mirror image of ``x`` is ``S - 1 - x`` and the image
centre is ``c = (S - 1) / 2``. An :class:`Affine` maps source to destination pixels,

    dst = s · R(θ) · F · (src - c) + c,     F = diag(-1, 1) for a flipped sample, else I,

and images are resampled with ``F.grid_sample`` (``align_corners=True``, which is exactly this
pixel-centre convention).

Image contract: :func:`normalize` and :func:`apply` both return float32 ``x / 255 - 0.5`` (in
``[-0.5, 0.5]``); :func:`apply` also accepts float images that are already normalised that way.
Whatever comes from outside the source image is black (``-0.5``), like the letterbox padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdtune.errors import KdtuneError
from kdtune.skeleton import FLIP_HEATMAPS, FLIP_OP18, FLIP_PAFS, NUM_HEATMAPS, NUM_PAFS

BLACK = -0.5  # a black pixel, normalised


@dataclass(frozen=True)
class AugmentParams:
    """Ranges to sample from: scale uniform in ``scale``, angle (degrees) uniform in
    ``[-rotate, rotate]``, horizontal flip with probability ``flip``."""

    scale: tuple[float, float] = (0.75, 1.25)
    rotate: float = 20.0
    flip: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not (0 < lo <= hi < math.inf):
            raise KdtuneError(f"augmentation scale must be 0 < low <= high, got {self.scale}")
        if not 0 <= self.rotate <= 180:
            raise KdtuneError(f"augmentation rotate must be in [0, 180] degrees, got {self.rotate}")
        if not 0 <= self.flip <= 1:
            raise KdtuneError(f"augmentation flip must be a probability in [0, 1], got {self.flip}")


@dataclass(frozen=True)
class Affine:
    """Per-sample transforms of ``input_size``-pixel images.

    ``matrix`` is float32 ``[B, 2, 3]`` mapping source to destination pixels; ``flipped`` is bool
    ``[B]``, true where the matrix mirrors (so left and right keypoints swap names).
    """

    matrix: torch.Tensor
    flipped: torch.Tensor
    input_size: int

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor) -> Affine:
        """The transforms of the samples at ``index``; an integer keeps a batch of one."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Affine(self.matrix[index], self.flipped[index], self.input_size)

    @classmethod
    def identity(
        cls, batch: int, input_size: int, device: torch.device | str | None = None
    ) -> Affine:
        """Transforms that change nothing."""
        zeros = torch.zeros(batch, device=device)
        return make_affine(zeros + 1, zeros, zeros.bool(), input_size)


def make_affine(
    scale: torch.Tensor, angle: torch.Tensor, flipped: torch.Tensor, input_size: int
) -> Affine:
    """The transforms with these per-sample scales ``[B]``, angles ``[B]`` (degrees) and flips
    ``[B]``, all about the centre of an ``input_size`` image."""
    radians = torch.deg2rad(angle.float())
    cos, sin = torch.cos(radians), torch.sin(radians)
    mirror = torch.where(flipped, -1.0, 1.0).to(cos)
    s = scale.float()
    # s · R · F: F negates the first column of R.
    linear = torch.stack(
        [
            torch.stack([s * cos * mirror, -s * sin], -1),
            torch.stack([s * sin * mirror, s * cos], -1),
        ],
        dim=-2,
    )  # [B, 2, 2]
    centre = torch.full_like(linear[:, :, 0], (input_size - 1) / 2)  # [B, 2]
    shift = centre - (linear @ centre[..., None])[..., 0]
    matrix = torch.cat([linear, shift[..., None]], dim=-1)
    return Affine(matrix=matrix, flipped=flipped.bool(), input_size=input_size)


def sample_affine(
    batch: int,
    params: AugmentParams,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    input_size: int = 128,
) -> Affine:
    """Draw one transform per sample from ``params`` with ``generator`` (deterministic per seed).

    Numbers are drawn on the generator's device and moved to ``device``.
    """
    if batch < 0:
        raise KdtuneError(f"batch must be >= 0, got {batch}")
    u = torch.rand(3, batch, generator=generator, device=generator.device).to(device)
    lo, hi = params.scale
    scale = lo + (hi - lo) * u[0]
    angle = params.rotate * (2 * u[1] - 1)
    flipped = u[2] < params.flip
    return make_affine(scale, angle, flipped, input_size)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 ``x / 255 - 0.5``: what the nets eat, augmented or not."""
    if images.dtype != torch.uint8:
        raise KdtuneError(f"normalize expects uint8 images, got {images.dtype}")
    return images.float() / 255 + BLACK


def apply(
    images: torch.Tensor, keypoints: torch.Tensor, masks: torch.Tensor, affine: Affine
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform images ``[B, 3, S, S]``, keypoints ``[B, P, 18, 3]`` and masks ``[B, S, S]``.

    Returns normalised float32 images (bilinear; outside the source: black), keypoints (moved by
    the matrix, left/right swapped for flipped samples, ``(0, 0, 0)`` once outside the image) and
    uint8 masks (nearest; outside the source: 0, i.e. not ignored).
    """
    size = _check_square(images, affine, "images")
    if masks.shape != (images.shape[0], size, size):
        raise KdtuneError(f"masks must have shape [B, {size}, {size}], got {list(masks.shape)}")
    base = images.float() / 255 if images.dtype == torch.uint8 else images.float() - BLACK
    grid = _sampling_grid(affine.matrix.to(images.device), size)
    out_images = _sample(base, grid, "bilinear") + BLACK
    out_masks = _sample(masks[:, None].float(), grid, "nearest")[:, 0].round().to(torch.uint8)
    return out_images, transform_keypoints(keypoints, affine), out_masks


def transform_keypoints(keypoints: torch.Tensor, affine: Affine) -> torch.Tensor:
    """Keypoints ``[B, P, 18, 3]`` moved by ``affine``; left and right swap for flipped samples.

    A labelled keypoint stays labelled while it lies in ``(-1, S)`` on both axes: the smallest
    interval that holds ``[0, S)`` and is its own mirror image (``x → S - 1 - x``), so that the
    identity and a double flip keep every keypoint. Others become ``(0, 0, 0)``.
    """
    if keypoints.dim() != 4 or keypoints.shape[-1] != 3:
        raise KdtuneError(f"keypoints must have shape [B, P, 18, 3], got {list(keypoints.shape)}")
    if keypoints.shape[0] != len(affine):
        raise KdtuneError(f"{keypoints.shape[0]} keypoint sets for {len(affine)} transforms")
    m = affine.matrix.to(keypoints.device)[:, None, None]  # [B, 1, 1, 2, 3]
    x, y, v = keypoints.float().unbind(dim=-1)
    new_x = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
    new_y = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
    size = affine.input_size
    inside = (new_x > -1) & (new_x < size) & (new_y > -1) & (new_y < size) & (v > 0)
    out = torch.stack([new_x, new_y, v], dim=-1) * inside[..., None]
    flipped = affine.flipped.to(keypoints.device)[:, None, None, None]
    return torch.where(flipped, out[:, :, list(FLIP_OP18)], out)


def warp_maps(
    heatmaps: torch.Tensor, pafs: torch.Tensor, affine: Affine, input_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a teacher's maps ``[B, 19, G, G]`` and ``[B, 38, G, G]``, computed on the original
    images, onto the augmented images.

    Maps are resampled bilinearly at grid resolution (cells are centred as in
    :mod:`kdtune.targets`); outside the source, the background is 1 and everything else 0.
    Flipped samples swap left/right channels; PAF vectors turn with the rotation (and mirror).
    ``input_size`` defaults to the affine's.
    """
    size = affine.input_size if input_size is None else input_size
    if size != affine.input_size:
        raise KdtuneError(f"input_size {size} does not match the affine's {affine.input_size}")
    grid = heatmaps.shape[-1]
    if heatmaps.shape[1:] != (NUM_HEATMAPS, grid, grid) or pafs.shape[1:] != (NUM_PAFS, grid, grid):
        raise KdtuneError(
            "maps must be [B, 19, G, G] and [B, 38, G, G], "
            f"got {list(heatmaps.shape)} and {list(pafs.shape)}"
        )
    if heatmaps.shape[0] != len(affine) or pafs.shape[0] != len(affine):
        raise KdtuneError(f"{heatmaps.shape[0]} sets of maps for {len(affine)} transforms")
    if size % grid:
        raise KdtuneError(f"input_size {size} is not a multiple of the map size {grid}")
    matrix = _grid_frame(affine.matrix.to(heatmaps.device), stride=size // grid)
    sampling = _sampling_grid(matrix, grid)
    flipped = affine.flipped.to(heatmaps.device)[:, None, None, None]

    background = torch.zeros(NUM_HEATMAPS, 1, 1, dtype=heatmaps.dtype, device=heatmaps.device)
    background[-1] = 1.0
    heat = _sample(heatmaps - background, sampling, "bilinear") + background
    heat = torch.where(flipped, heat[:, list(FLIP_HEATMAPS)], heat)

    paf = _sample(pafs, sampling, "bilinear")
    paf = torch.where(flipped, paf[:, list(FLIP_PAFS)], paf)
    return heat, _turn_vectors(paf, matrix[:, :, :2])


def _turn_vectors(pafs: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """Apply the orthogonal part (``R · F``) of each ``linear [B, 2, 2]`` to the PAF vectors."""
    det = linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]
    q = (linear / det.abs().sqrt()[:, None, None]).to(pafs.dtype)[:, None, :, :, None, None]
    batch, _, h, w = pafs.shape
    vx, vy = pafs.reshape(batch, -1, 2, h, w).unbind(dim=2)  # [B, 19, H, W]
    new_x = q[:, :, 0, 0] * vx + q[:, :, 0, 1] * vy
    new_y = q[:, :, 1, 0] * vx + q[:, :, 1, 1] * vy
    return torch.stack([new_x, new_y], dim=2).reshape(pafs.shape)


def _grid_frame(matrix: torch.Tensor, stride: int) -> torch.Tensor:
    """Re-express pixel-space transforms in grid cells: cell ``g`` is centred on pixel
    ``g * stride + o`` with ``o = stride / 2 - 0.5``."""
    linear, shift = matrix[:, :, :2], matrix[:, :, 2]
    offset = torch.full_like(shift, stride / 2 - 0.5)
    grid_shift = ((linear @ offset[..., None])[..., 0] + shift - offset) / stride
    return torch.cat([linear, grid_shift[..., None]], dim=-1)


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """``x [B, C, n, n]`` read at ``grid`` (from :func:`_sampling_grid`); outside reads 0."""
    grid = grid.to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def _sampling_grid(matrix: torch.Tensor, n: int) -> torch.Tensor:
    """``grid_sample``'s grid ``[B, n, n, 2]``: output pixel ``dst`` reads input pixel
    ``matrix⁻¹ · dst`` (pixel ``i`` centred at coordinate ``i``), in ``[-1, 1]`` coordinates.

    What ``F.affine_grid(theta, ..., align_corners=True)`` computes, by broadcasting instead of
    a batched matmul: the same numbers, ~10x faster on CPUs.
    """
    theta = _normalized_inverse(matrix, n)[:, :, None, None, :]  # [B, 2, 1, 1, 3]
    h = (n - 1) / 2 if n > 1 else 1.0
    q = (torch.arange(n, device=matrix.device, dtype=matrix.dtype) - h) / h
    qx, qy = q[None, :], q[:, None]  # output x varies along width, y along height
    gx = theta[:, 0, ..., 0] * qx + theta[:, 0, ..., 1] * qy + theta[:, 0, ..., 2]
    gy = theta[:, 1, ..., 0] * qx + theta[:, 1, ..., 1] * qy + theta[:, 1, ..., 2]
    return torch.stack([gx, gy], dim=-1)


def _normalized_inverse(matrix: torch.Tensor, n: int) -> torch.Tensor:
    """The destination → source map (``affine_grid``'s theta) in ``[-1, 1]`` coordinates,
    where pixel ``p`` sits at ``q = (p - h) / h``, ``h = (n - 1) / 2``."""
    a, b, c, d = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1]
    det = a * d - b * c
    rows = [torch.stack([d, -b], -1), torch.stack([-c, a], -1)]
    inverse = torch.stack(rows, -2) / det[:, None, None]  # [B, 2, 2]
    h = (n - 1) / 2 if n > 1 else 1.0
    centre = torch.full_like(matrix[:, :, 2], h)
    # src = inverse · (dst - t); in q coordinates the shift is (inverse · (c - t) - c) / h.
    shift = ((inverse @ (centre - matrix[:, :, 2])[..., None])[..., 0] - centre) / h
    return torch.cat([inverse, shift[..., None]], dim=-1)


def _check_square(images: torch.Tensor, affine: Affine, name: str) -> int:
    """The side of square ``images [B, C, S, S]``, checked against the affine."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise KdtuneError(f"{name} must have shape [B, C, S, S], got {list(images.shape)}")
    size = int(images.shape[-1])
    if size != affine.input_size or images.shape[0] != len(affine):
        raise KdtuneError(
            f"{name} {list(images.shape)} do not match the affine "
            f"({len(affine)} samples of {affine.input_size} px)"
        )
    return size
