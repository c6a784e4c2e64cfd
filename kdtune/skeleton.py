"""The one definition of the pose skeleton used everywhere in kdtune.

Keypoints are kept in the OpenPose-18 order (COCO-17 plus a neck at the shoulders' midpoint).
``LIMBS`` lists the 19 limbs *in PAF channel order*: limb ``k`` owns PAF channels ``2k`` (x) and
``2k + 1`` (y). That order is the one of the public Lightweight-OpenPose checkpoint, so its
outputs decode with the same table.
"""

from __future__ import annotations

import numpy as np

COCO17: tuple[str, ...] = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear",
    "l_sho", "r_sho", "l_elb", "r_elb", "l_wri", "r_wri",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ank", "r_ank",
)  # fmt: skip

OP18: tuple[str, ...] = (
    "nose", "neck", "r_sho", "r_elb", "r_wri", "l_sho", "l_elb", "l_wri",
    "r_hip", "r_knee", "r_ank", "l_hip", "l_knee", "l_ank",
    "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip

NUM_KEYPOINTS = len(OP18)  # 18
NUM_HEATMAPS = NUM_KEYPOINTS + 1  # plus background
NECK = OP18.index("neck")

# OP18 index -> COCO17 index (the neck has none: -1).
OP18_FROM_COCO17: tuple[int, ...] = tuple(
    COCO17.index(name) if name in COCO17 else -1 for name in OP18
)
# COCO17 index -> OP18 index.
COCO17_FROM_OP18: tuple[int, ...] = tuple(OP18.index(name) for name in COCO17)

_LIMB_NAMES: tuple[tuple[str, str], ...] = (
    ("neck", "r_hip"), ("r_hip", "r_knee"), ("r_knee", "r_ank"),
    ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ank"),
    ("neck", "r_sho"), ("r_sho", "r_elb"), ("r_elb", "r_wri"), ("r_sho", "r_ear"),
    ("neck", "l_sho"), ("l_sho", "l_elb"), ("l_elb", "l_wri"), ("l_sho", "l_ear"),
    ("neck", "nose"), ("nose", "r_eye"), ("nose", "l_eye"),
    ("r_eye", "r_ear"), ("l_eye", "l_ear"),
)  # fmt: skip
LIMBS: tuple[tuple[int, int], ...] = tuple((OP18.index(a), OP18.index(b)) for a, b in _LIMB_NAMES)
NUM_LIMBS = len(LIMBS)  # 19
NUM_PAFS = 2 * NUM_LIMBS  # 38


def _mirror(name: str) -> str:
    if name.startswith("l_"):
        return "r_" + name[2:]
    if name.startswith("r_"):
        return "l_" + name[2:]
    return name


# Horizontal flip: keypoint k of the flipped image is keypoint FLIP_OP18[k] of the original.
FLIP_OP18: tuple[int, ...] = tuple(OP18.index(_mirror(n)) for n in OP18)
# Limb k of the flipped image is limb FLIP_LIMBS[k] of the original (its PAF x component negated).
FLIP_LIMBS: tuple[int, ...] = tuple(LIMBS.index((FLIP_OP18[a], FLIP_OP18[b])) for a, b in LIMBS)
# Heatmap channel permutation under flip (background stays last).
FLIP_HEATMAPS: tuple[int, ...] = (*FLIP_OP18, NUM_KEYPOINTS)
# PAF channel permutation under flip (x channels must also be negated).
FLIP_PAFS: tuple[int, ...] = tuple(c for k in FLIP_LIMBS for c in (2 * k, 2 * k + 1))


def coco17_to_op18(kps: np.ndarray) -> np.ndarray:
    """Map ``[..., 17, 3]`` COCO keypoints (x, y, v) to ``[..., 18, 3]`` OpenPose order.

    The neck is the midpoint of the shoulders, visible (v = min of the two) only where both are
    labelled; otherwise it is unlabelled (0, 0, 0).
    """
    kps = np.asarray(kps, dtype=np.float32)
    out = np.zeros((*kps.shape[:-2], NUM_KEYPOINTS, 3), dtype=np.float32)
    for op, coco in enumerate(OP18_FROM_COCO17):
        if coco >= 0:
            out[..., op, :] = kps[..., coco, :]
    ls, rs = kps[..., COCO17.index("l_sho"), :], kps[..., COCO17.index("r_sho"), :]
    both = (ls[..., 2] > 0) & (rs[..., 2] > 0)
    out[..., NECK, :2] = np.where(both[..., None], (ls[..., :2] + rs[..., :2]) / 2, 0.0)
    out[..., NECK, 2] = np.where(both, np.minimum(ls[..., 2], rs[..., 2]), 0.0)
    return out


def op18_to_coco17(kps: np.ndarray) -> np.ndarray:
    """Map ``[..., 18, C]`` OpenPose-order keypoints back to COCO17 order (the neck dropped)."""
    kps = np.asarray(kps)
    return kps[..., list(COCO17_FROM_OP18), :]
