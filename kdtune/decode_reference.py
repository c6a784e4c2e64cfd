"""The reference pipeline's decoding (Lightweight OpenPose's validation), reimplemented.

``decoder: reference`` decodes maps as the reference's validation does, so that kdtune's AP
figures can be set beside the reference's. kdtune's own decoder (:mod:`kdtune.decode`) is
tuned for 128 × 128 inputs; this one keeps the reference's choices, good or bad:

1. Upsampling: heatmaps *and* PAFs are upsampled bicubically (``align_corners=False``, the
   kernel of OpenCV's ``INTER_CUBIC``; the two agree to 1e-6) by the stride, i.e. back to the
   net's input resolution. Upsampled pixel ``j`` lies at input pixel ``j`` (kdtune's map
   convention, :mod:`kdtune.decode`), so peaks are whole input pixels: no sub-pixel refinement.
2. Peaks, per joint: values below ``thresh`` (0.1) are set to 0; a peak is a pixel strictly
   greater than its four neighbours (zero beyond the border). Peaks are taken in order of
   column, then row; each one not yet suppressed suppresses the later ones closer than
   ``nms_radius`` (6) pixels, whatever their scores. A peak's score is its (upsampled) value.
3. Limbs, in the reference's order (the tree from the neck, breadth first by body part, then
   the two redundant shoulder → ear limbs): every pair of candidate ends is scored by the
   limb's upsampled PAF read at ``num_samples`` (10) points from end to end, each rounded to the
   nearest pixel (half to even), projected on the pair's unit vector. Samples above
   ``paf_thresh`` (0.05) pass; the pair's score is the mean of the passing samples. A pair is a
   candidate where that score is positive and more than ``min_ratio`` (0.8) of the samples
   pass (9 of 10). No penalty for long limbs, no fallback for short ones. Candidates are
   matched one to one, greedily by score.
4. Persons (the reference's "pose entries"): a tree limb's pair joins every person that holds
   its first end (its second end overwrites any the person had; joint count and score grow by
   the second end's peak score plus the pair's score), or starts a person with both ends
   (count 2, score: both peak scores plus the pair's). A redundant limb only fills in a missing
   ear or shoulder of a person holding the other end (count and score unchanged).
5. Persons with fewer than ``min_joints`` (3) joints counted, or whose score per counted joint
   is below ``min_mean_score`` (0.2), are dropped. A person's score is its score times (count
   − 1), as the reference's COCO results have it.

The reference adds half a pixel to every coordinate when it writes COCO results; kdtune's
letterbox maps pixel indices exactly (:mod:`kdtune.data.coco`), so no shift is added here.
It averages over scales only when asked (``--multiscale``); its validation default, one scale,
is what this module does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from kdtune.decode import Person, check_maps
from kdtune.skeleton import LIMBS, NUM_KEYPOINTS, OP18

# The reference's limbs in the order it groups them, as (first end, second end) names.
_REFERENCE_ORDER: tuple[tuple[str, str], ...] = (
    ("neck", "r_sho"), ("neck", "l_sho"), ("r_sho", "r_elb"), ("r_elb", "r_wri"),
    ("l_sho", "l_elb"), ("l_elb", "l_wri"), ("neck", "r_hip"), ("r_hip", "r_knee"),
    ("r_knee", "r_ank"), ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ank"),
    ("neck", "nose"), ("nose", "r_eye"), ("r_eye", "r_ear"), ("nose", "l_eye"),
    ("l_eye", "l_ear"), ("r_sho", "r_ear"), ("l_sho", "l_ear"),
)  # fmt: skip
# The same limbs as indices into LIMBS (their PAF channels); the last two are the redundant ones.
REFERENCE_LIMB_ORDER: tuple[int, ...] = tuple(
    LIMBS.index((OP18.index(a), OP18.index(b))) for a, b in _REFERENCE_ORDER
)
_REDUNDANT: frozenset[int] = frozenset(REFERENCE_LIMB_ORDER[-2:])

_CHUNK_BYTES = 64 * 2**20  # upsampled maps held at once (16 images at 128 × 128, 2 at 368)


class ReferenceOptions(NamedTuple):
    """The reference's thresholds (its defaults)."""

    thresh: float = 0.1
    nms_radius: float = 6.0
    num_samples: int = 10
    paf_thresh: float = 0.05
    min_ratio: float = 0.8
    min_joints: int = 3
    min_mean_score: float = 0.2


def upsample(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """``maps [B, C, G, G]`` upsampled bicubically by ``factor`` (``align_corners=False``)."""
    if factor == 1:
        return maps
    return F.interpolate(maps, scale_factor=factor, mode="bicubic", align_corners=False)


def peak_mask(heat: torch.Tensor, thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, peaks)``: the maps with values below ``thresh`` zeroed, and where a pixel is
    strictly greater than its four neighbours (zero beyond the border)."""
    heat = torch.where(heat < thresh, torch.zeros_like(heat), heat)
    pad = F.pad(heat, (1, 1, 1, 1))
    centre = pad[..., 1:-1, 1:-1]
    peaks = (
        (centre > pad[..., 1:-1, :-2])
        & (centre > pad[..., 1:-1, 2:])
        & (centre > pad[..., :-2, 1:-1])
        & (centre > pad[..., 2:, 1:-1])
    )
    return heat, peaks


def suppress(xy: np.ndarray, radius: float) -> np.ndarray:
    """Which of the peaks ``xy [N, 2]`` (in order of column, then row) survive: each one not
    suppressed suppresses every later one closer than ``radius``."""
    keep = np.ones(len(xy), dtype=bool)
    for i in range(len(xy)):
        if keep[i]:
            close = np.hypot(*(xy[i + 1 :] - xy[i]).T) < radius
            keep[i + 1 :] &= ~close
    return keep


def extract_peaks(heat: torch.Tensor, options: ReferenceOptions) -> list[list[np.ndarray]]:
    """Peaks of upsampled heatmaps ``[B, 18, H, W]``: per image, per joint, ``[n, 3]`` rows of
    (x, y, score) in upsampled pixels, in the order of column, then row."""
    values, mask = peak_mask(heat, options.thresh)
    b, j, y, x = (t.cpu().numpy() for t in mask.nonzero(as_tuple=True))
    score = values[mask].float().cpu().numpy()
    order = np.lexsort((y, x, j, b))
    b, j, y, x, score = b[order], j[order], y[order], x[order], score[order]
    rows = np.stack([x, y, score], axis=1).astype(np.float64)
    bounds = np.searchsorted(b * NUM_KEYPOINTS + j, np.arange(heat.shape[0] * NUM_KEYPOINTS + 1))
    out: list[list[np.ndarray]] = []
    for i in range(heat.shape[0]):
        joints = []
        for k in range(NUM_KEYPOINTS):
            s, e = bounds[i * NUM_KEYPOINTS + k], bounds[i * NUM_KEYPOINTS + k + 1]
            group = rows[s:e]
            joints.append(group[suppress(group[:, :2], options.nms_radius)])
        out.append(joints)
    return out


def score_pairs(
    ends_a: np.ndarray, ends_b: np.ndarray, paf: np.ndarray, options: ReferenceOptions
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, ok)`` tables ``[na, nb]`` of a limb's candidate pairs.

    ``ends_a``/``ends_b``: ``[n, >=2]`` peaks (x, y, ...); ``paf``: the limb's ``[2, H, W]``
    upsampled field. Points from end ``a`` to end ``b`` (both included) are rounded to pixels.
    """
    a = ends_a[:, None, :2].astype(np.float32)  # [na, 1, 2]
    vec = ends_b[None, :, :2].astype(np.float32) - a  # [na, nb, 2]
    n = options.num_samples
    steps = vec * np.float32(1.0 / max(n - 1, 1))
    t = np.arange(n, dtype=np.float32)[:, None]
    points = np.rint(steps[:, :, None, :] * t + a[:, :, None, :]).astype(np.int64)
    h, w = paf.shape[-2:]
    px = points[..., 0].clip(0, w - 1)
    py = points[..., 1].clip(0, h - 1)
    field = paf[:, py, px]  # [2, na, nb, n]
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    unit = vec / (norm + 1e-6)
    dots = field[0] * unit[..., 0:1] + field[1] * unit[..., 1:2]  # [na, nb, n]
    passed = dots > options.paf_thresh
    count = passed.sum(-1)
    score = (dots * passed).sum(-1) / (count + 1e-6)
    ok = (score > 0) & (count / n > options.min_ratio)
    return score, ok


def match(score: np.ndarray, ok: np.ndarray) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(index_a, index_b, score)`` of the candidates ``ok``, greedily by
    score (ties in the order of the second end, then the first)."""
    ib, ia = np.nonzero(ok.T)
    value = score[ia, ib]
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs: list[tuple[int, int, float]] = []
    for r in np.argsort(-value, kind="stable"):
        a, b = int(ia[r]), int(ib[r])
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            pairs.append((a, b, float(value[r])))
    return pairs


def group_image(
    peaks: list[np.ndarray], paf: np.ndarray, options: ReferenceOptions
) -> list[tuple[np.ndarray, int, float]]:
    """The persons of one image as ``(peak index per joint [18] (-1: none), count, score)``,
    from its peaks per joint (:func:`extract_peaks`) and its upsampled PAFs ``[38, H, W]``;
    none filtered yet."""
    joints = np.zeros((0, NUM_KEYPOINTS), dtype=np.int64)
    count: list[int] = []
    total: list[float] = []
    for k in REFERENCE_LIMB_ORDER:
        a, b = LIMBS[k]
        if len(peaks[a]) == 0 or len(peaks[b]) == 0:
            continue
        score, ok = score_pairs(peaks[a], peaks[b], paf[2 * k : 2 * k + 2], options)
        for pa, pb, s in match(score, ok):
            if k in _REDUNDANT:
                fill_b = (joints[:, a] == pa) & (joints[:, b] == -1)
                fill_a = ~fill_b & (joints[:, b] == pb) & (joints[:, a] == -1)
                joints[fill_b, b] = pb
                joints[fill_a, a] = pa
                continue
            holders = np.nonzero(joints[:, a] == pa)[0]
            if len(holders):
                joints[holders, b] = pb
                for p in holders:
                    count[p] += 1
                    total[p] += float(peaks[b][pb, 2]) + s
            else:
                row = np.full((1, NUM_KEYPOINTS), -1, dtype=np.int64)
                row[0, a], row[0, b] = pa, pb
                joints = np.concatenate([joints, row])
                count.append(2)
                total.append(float(peaks[a][pa, 2] + peaks[b][pb, 2]) + s)
    return list(zip(joints, count, total, strict=True))


def decode_batch_reference(
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    stride: int = 8,
    options: ReferenceOptions | None = None,
) -> list[list[Person]]:
    """Decode ``heatmaps [B, >=18, G, G]`` and ``pafs [B, 38, G, G]`` as the reference does.

    Persons come back in input pixels (the maps upsampled by ``stride``), sorted by descending
    score; a joint's third value is its peak's score.
    """
    check_maps(heatmaps, pafs)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    opts = options or ReferenceOptions()
    pixels = heatmaps.shape[-2] * heatmaps.shape[-1] * stride**2
    chunk = max(1, _CHUNK_BYTES // (4 * (NUM_KEYPOINTS + pafs.shape[1]) * pixels))
    out: list[list[Person]] = []
    with torch.no_grad():
        for start in range(0, heatmaps.shape[0], chunk):
            heat = upsample(heatmaps[start : start + chunk, :NUM_KEYPOINTS].float(), stride)
            paf = upsample(pafs[start : start + chunk].float(), stride).cpu().numpy()
            for peaks, image_paf in zip(extract_peaks(heat, opts), paf, strict=True):
                out.append(_persons(peaks, group_image(peaks, image_paf, opts), opts))
    return out


def _persons(
    peaks: list[np.ndarray],
    entries: list[tuple[np.ndarray, int, float]],
    options: ReferenceOptions,
) -> list[Person]:
    """The entries that pass the reference's filter, as :class:`Person` records."""
    persons: list[Person] = []
    for joints, count, total in entries:
        if count < options.min_joints or total / count < options.min_mean_score:
            continue
        kps = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        for j in np.nonzero(joints >= 0)[0]:
            kps[j] = peaks[j][joints[j]]
        persons.append(Person(keypoints=kps, score=total * max(0, count - 1)))
    persons.sort(key=lambda person: -person.score)
    return persons
