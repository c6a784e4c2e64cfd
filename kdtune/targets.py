"""Ground-truth heatmaps and part affinity fields, built for a whole batch at once in torch.

Conventions (those of the Lightweight-OpenPose reference, made consistent):

- Keypoints are ``[B, P, 18, 3]`` tensors of (x, y, v) in input pixels, OpenPose-18 order;
  ``v > 0`` means labelled. Padding persons are all zeros, so they contribute nothing.
- Grid cell ``g`` (of ``G = input_size // stride``) has its centre at input pixel
  ``g * stride + stride / 2 - 0.5``. The mirror image of pixel ``x`` is ``input_size - 1 - x``
  and the mirror of cell ``g`` is cell ``G - 1 - g``, so targets of flipped keypoints are exactly
  the flipped targets.
- Heatmap ``k`` is the maximum over persons of ``exp(-d² / 2σ²)`` (``d`` in input pixels from the
  keypoint to the cell centre), set to 0 where the exponent exceeds ``ln 100`` (about 3σ), as the
  reference does. Channel 18 is the background, ``1 - max`` over the 18 keypoint maps.
- PAF of limb ``k`` (:data:`kdtune.skeleton.LIMBS`; channels ``2k`` = x, ``2k + 1`` = y): the unit
  vector from end ``a`` to end ``b``, written on cells whose centre lies within ``paf_thickness``
  grid cells of the segment and projects between its ends. Where persons overlap, their vectors
  are averaged. Distances are measured in grid units from the same cell centres as the heatmaps
  (the reference used the cell's corner there, which breaks flip symmetry by half a cell).
"""

from __future__ import annotations

import torch

from kdtune.errors import KdtuneError
from kdtune.skeleton import LIMBS, NUM_KEYPOINTS, NUM_LIMBS

# The reference skips a Gaussian's tail where the exponent exceeds ln(100) (value below 0.01).
GAUSSIAN_CUTOFF = 4.6052
# Limbs shorter than this (in grid cells) have no direction and are skipped.
MIN_LIMB_LENGTH = 1e-7

_LIMB_A = [a for a, _ in LIMBS]
_LIMB_B = [b for _, b in LIMBS]


def make_targets(
    keypoints: torch.Tensor,
    input_size: int = 128,
    stride: int = 8,
    sigma: float = 7.0,
    paf_thickness: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps ``[B, 19, G, G]`` and PAFs ``[B, 38, G, G]`` (float32, on the keypoints' device)."""
    _check(keypoints, input_size, stride, sigma, paf_thickness)
    keypoints = keypoints.float()
    grid = input_size // stride
    centres = cell_centres(grid, stride, keypoints.device)
    peaks = keypoint_heatmaps(keypoints, centres, sigma)
    background = 1.0 - peaks.amax(dim=1, keepdim=True)
    heatmaps = torch.cat([peaks, background], dim=1)
    pafs = limb_pafs(keypoints, centres / stride, stride, paf_thickness)
    return heatmaps, pafs


def cell_centres(grid: int, stride: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Input-pixel coordinates ``[G]`` of the grid cells' centres:
    ``g * stride + stride/2 - 0.5``."""
    return torch.arange(grid, device=device, dtype=torch.float32) * stride + (stride / 2 - 0.5)


def keypoint_heatmaps(keypoints: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """The 18 keypoint maps ``[B, 18, G, G]``: per keypoint, the maximum over persons.

    The maximum of ``exp(-e)`` over persons is ``exp(-min e)``, so only the smallest exponent is
    exponentiated; exponents past the cut (and those of unlabelled keypoints) give 0.
    """
    batch, persons = keypoints.shape[:2]
    grid = centres.shape[0]
    if persons == 0:
        return keypoints.new_zeros(batch, NUM_KEYPOINTS, grid, grid)
    x, y, v = keypoints.unbind(dim=-1)  # each [B, P, 18]
    scale = 1.0 / (2.0 * sigma * sigma)
    ex = (centres - x[..., None]) ** 2 * scale  # [B, P, 18, G]
    ey = (centres - y[..., None]) ** 2 * scale
    ex = ex.masked_fill((v <= 0)[..., None], 2 * GAUSSIAN_CUTOFF)  # unlabelled: beyond the cut
    exponent = (ey[..., :, None] + ex[..., None, :]).amin(dim=1)  # [B, 18, G, G]
    cut = exponent > GAUSSIAN_CUTOFF
    # Clamped first: exp of large negatives lands in denormals, which are ~10x slower on CPUs.
    return torch.exp(-exponent.clamp_max_(2 * GAUSSIAN_CUTOFF)).masked_fill_(cut, 0.0)


def limb_pafs(
    keypoints: torch.Tensor, centres: torch.Tensor, stride: int, thickness: float
) -> torch.Tensor:
    """The 38 PAF channels ``[B, 38, G, G]``; ``centres`` are the cell centres in grid units.

    A cell is on limb ``a → b`` when its offset from ``a`` projects onto the limb's direction
    within ``[0, length]`` (tested as ``|projection - length/2| <= length/2``) and lies at most
    ``thickness`` across it. Unusable limbs get a negative half-length, which no cell satisfies.
    """
    batch, persons = keypoints.shape[:2]
    grid = centres.shape[0]
    if persons == 0:
        return keypoints.new_zeros(batch, 2 * NUM_LIMBS, grid, grid)
    xy = keypoints[..., :2] / stride
    labelled = keypoints[..., 2] > 0
    a, b = xy[:, :, _LIMB_A], xy[:, :, _LIMB_B]  # [B, P, 19, 2]
    length = torch.linalg.vector_norm(b - a, dim=-1)  # [B, P, 19]
    usable = labelled[:, :, _LIMB_A] & labelled[:, :, _LIMB_B] & (length > MIN_LIMB_LENGTH)
    ux, uy = ((b - a) / length.clamp_min(MIN_LIMB_LENGTH)[..., None]).unbind(dim=-1)
    ux, uy = ux[..., None, None], uy[..., None, None]  # [B, P, 19, 1, 1]
    half = torch.where(usable, length / 2, -1.0)[..., None, None]
    off_x = (centres - a[..., 0, None])[..., None, :]  # [B, P, 19, 1, G]: cell x minus a.x
    off_y = (centres - a[..., 1, None])[..., :, None]  # [B, P, 19, G, 1]
    along = (off_x * ux + (off_y * uy - half)).abs_()  # [B, P, 19, G, G]
    across = (off_x * uy - off_y * ux).abs_()
    on = ((along <= half) & (across <= thickness)).float()
    count = on.sum(dim=1).clamp_min_(1.0)  # [B, 19, G, G]
    paf_x = (on * ux).sum(dim=1) / count
    paf_y = (on * uy).sum(dim=1) / count
    return torch.stack([paf_x, paf_y], dim=2).reshape(batch, 2 * NUM_LIMBS, grid, grid)


def _check(
    keypoints: torch.Tensor, input_size: int, stride: int, sigma: float, paf_thickness: float
) -> None:
    """Reject shapes and settings that cannot make targets."""
    if keypoints.dim() != 4 or keypoints.shape[2:] != (NUM_KEYPOINTS, 3):
        raise KdtuneError(f"keypoints must have shape [B, P, 18, 3], got {list(keypoints.shape)}")
    if stride <= 0 or input_size <= 0 or input_size % stride:
        raise KdtuneError(f"input_size {input_size} is not a positive multiple of stride {stride}")
    if not sigma > 0:
        raise KdtuneError(f"sigma must be > 0, got {sigma}")
    if not paf_thickness >= 0:
        raise KdtuneError(f"paf_thickness must be >= 0, got {paf_thickness}")
