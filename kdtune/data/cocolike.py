"""COCO's labelling defects, put into a COCO person-keypoints document's annotations.

:func:`add_defects` returns a copy of a document whose person annotations carry three defects
that human-made COCO labels have and the synthetic set's do not, each at a rate of
:class:`Defects`:

- **annotator jitter**: every labelled joint moves by a normal draw of standard deviation
  ``jitter × σ_k × s`` pixels along each axis, where ``σ_k`` is COCO's per-keypoint OKS
  constant for joint ``k`` (the 17 ``kpt_oks_sigmas`` of COCO's keypoint evaluation, read from
  pycocotools) and ``s = sqrt(area)`` the person's scale, as COCO's OKS defines it; the moved
  joint stays inside the image;
- **unlabelled joints**: each labelled joint becomes unlabelled ``(0, 0, 0)`` with probability
  ``unlabelled_joints``; a person left with none is a person without keypoints, whose region
  the loader then ignores (as it does COCO's own);
- **unannotated persons**: each person's annotation is removed with probability
  ``unannotated_persons``, so that person is simply absent, as a person the annotators missed
  is in COCO: no keypoints and no ignore region, the training targets call its pixels
  background.

Images are untouched. Every draw comes from a random stream of ``(seed, annotation id)``, so the
defects of one person do not depend on the order or number of the others.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Where each default comes from (docs/known-answer.md repeats these).
SOURCES: dict[str, str] = {
    "jitter": (
        "1.0: one COCO annotator's spread, σ_k × scale with σ_k COCO's per-keypoint OKS "
        "constants (cocodataset.org keypoint evaluation; pycocotools kpt_oks_sigmas)"
    ),
    "unlabelled_joints": (
        "0.15: an assumed rate, the one issue 20's COCO-like ratio table used; not measured on COCO"
    ),
    "unannotated_persons": (
        "0.10: an assumed rate, the one issue 20's COCO-like ratio table used; not measured on COCO"
    ),
    "seed": "0: the random stream of the defects (any integer >= 0)",
}


@dataclass(frozen=True)
class Defects:
    """The rates of the three defects and the seed of their draws."""

    jitter: float = 1.0  # multiple of COCO's annotator spread; 0: none
    unlabelled_joints: float = 0.15  # probability a labelled joint is made unlabelled
    unannotated_persons: float = 0.10  # probability a person's annotation is removed
    seed: int = 0


def oks_sigmas() -> np.ndarray:
    """COCO's 17 per-keypoint OKS constants σ_k (COCO-17 order), as pycocotools evaluates."""
    from pycocotools.cocoeval import Params

    return np.asarray(Params(iouType="keypoints").kpt_oks_sigmas, dtype=np.float64)


def add_defects(doc: dict[str, Any], defects: Defects) -> dict[str, Any]:
    """A copy of the COCO document ``doc`` with ``defects`` in its person annotations (crowds
    and annotations without keypoints are kept as they are)."""
    out = copy.deepcopy(doc)
    sizes = {im["id"]: (float(im["width"]), float(im["height"])) for im in out["images"]}
    sigmas = oks_sigmas()
    kept = []
    for ann in out["annotations"]:
        kps = ann.get("keypoints")
        if ann.get("iscrowd", 0) or not kps or not any(v > 0 for v in kps[2::3]):
            kept.append(ann)
            continue
        rng = np.random.default_rng([defects.seed, int(ann["id"])])
        if rng.random() < defects.unannotated_persons:
            continue  # missed by the annotators: absent
        w, h = sizes[ann["image_id"]]
        ann["keypoints"] = _label(kps, rng, defects, sigmas, math.sqrt(float(ann["area"])), w, h)
        ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
        kept.append(ann)
    out["annotations"] = kept
    return out


def _label(
    kps: list[float],
    rng: np.random.Generator,
    defects: Defects,
    sigmas: np.ndarray,
    scale: float,
    width: float,
    height: float,
) -> list[float]:
    """One person's 51 keypoint values with jitter and unlabelled joints."""
    xyv = np.asarray(kps, dtype=np.float64).reshape(17, 3)
    noise = rng.standard_normal((17, 2)) * (defects.jitter * sigmas * scale)[:, None]
    dropped = rng.random(17) < defects.unlabelled_joints
    labelled = xyv[:, 2] > 0
    xy = xyv[:, :2] + noise
    xy[:, 0] = np.clip(xy[:, 0], 0.0, width - 1.0)
    xy[:, 1] = np.clip(xy[:, 1], 0.0, height - 1.0)
    out: list[float] = []
    for k in range(17):
        if not labelled[k] or dropped[k]:
            out += [0.0, 0.0, 0.0]
        else:
            out += [round(float(xy[k, 0]), 2), round(float(xy[k, 1]), 2), float(xyv[k, 2])]
    return out
