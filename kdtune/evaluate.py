"""COCO keypoint AP of decoded persons: the objective every trial reports.

Figures come back as ``{"ap", "ap50", "ap75", "apm", "apl", "ar"}`` (Python floats; the training
loop prefixes them with ``val/``). pycocotools reports -1 where nothing can be measured (no
ground-truth person in the evaluated images, or none in an area range); kdtune reports 0.0
there, as it does when there is no detection at all, so that a search never sees a negative
or missing objective.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kdtune.errors import KdtuneError

if TYPE_CHECKING:
    import torch

    from kdtune.data.poseset import PoseSet
    from kdtune.decode import Person

# Names of the COCOeval keypoint stats kept, with their index in ``COCOeval.stats``.
METRICS: tuple[tuple[str, int], ...] = (
    ("ap", 0),  # AP @ OKS 0.50:0.95
    ("ap50", 1),
    ("ap75", 2),
    ("apm", 3),  # medium persons
    ("apl", 4),  # large persons
    ("ar", 5),  # AR @ OKS 0.50:0.95
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what pycocotools prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@lru_cache(maxsize=8)
def _load_coco(path: str) -> COCO:
    with _quiet():
        return COCO(path)


def load_coco(ann_file: str | Path) -> COCO:
    """The COCO ground truth of ``ann_file``, loaded once per process and quietly."""
    path = Path(ann_file)
    if not path.is_file():
        raise KdtuneError(f"COCO annotation file not found: {path}")
    try:
        return _load_coco(str(path.resolve()))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise KdtuneError(f"not a COCO annotation file: {path} ({exc})") from exc


def zero_metrics() -> dict[str, float]:
    """The figures of an evaluation with nothing to count."""
    return {name: 0.0 for name, _ in METRICS}


def coco_keypoint_ap(
    coco_gt: COCO, detections: Sequence[dict], image_ids: Sequence[int]
) -> dict[str, float]:
    """COCO keypoint AP/AR of ``detections`` on the images ``image_ids`` of ``coco_gt``.

    Detections on other images are left out. No detection at all gives 0.0 everywhere, and
    figures pycocotools cannot measure (-1) are reported as 0.0.
    """
    ids = sorted({int(i) for i in image_ids})
    unknown = set(ids) - set(coco_gt.getImgIds())
    if unknown:
        raise KdtuneError(f"image ids not in the COCO ground truth: {sorted(unknown)[:5]}")
    wanted = set(ids)
    dets = [dict(d) for d in detections if int(d["image_id"]) in wanted]  # loadRes edits them
    if not dets:
        return zero_metrics()
    with _quiet():
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: max(float(evaluator.stats[i]), 0.0) for name, i in METRICS}


def gt_as_detections(coco_gt: COCO, image_ids: Sequence[int]) -> list[dict]:
    """The labelled, non-crowd persons of ``image_ids`` as detections with score 1.0."""
    ann_ids = coco_gt.getAnnIds(imgIds=[int(i) for i in image_ids], iscrowd=False)
    return [
        {
            "image_id": int(ann["image_id"]),
            "category_id": 1,
            "keypoints": [float(v) for v in ann["keypoints"]],
            "score": 1.0,
        }
        for ann in coco_gt.loadAnns(ann_ids)
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd", 0)
    ]


def detections_for(
    persons: Sequence[Sequence[Person]], poseset: PoseSet, start: int = 0
) -> list[dict]:
    """COCO results of decoded persons of images ``start, start + 1, ...`` of ``poseset``."""
    from kdtune.decode import persons_to_coco

    dets: list[dict] = []
    for offset, image_persons in enumerate(persons):
        i = start + offset
        dets.extend(
            persons_to_coco(
                image_persons,
                int(poseset.image_ids[i]),
                scale=float(poseset.scales[i]),
                pad=[float(v) for v in poseset.pads[i]],
            )
        )
    return dets


def evaluate_predictions(
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    poseset: PoseSet,
    stride: int,
    **decode_options: Any,
) -> dict[str, float]:
    """Decode maps of every image of ``poseset`` (in order) and evaluate them against its
    COCO file."""
    from kdtune.decode import decode_batch

    if heatmaps.shape[0] != len(poseset) or pafs.shape[0] != len(poseset):
        raise ValueError(
            f"got maps for {heatmaps.shape[0]}/{pafs.shape[0]} images, the set has {len(poseset)}"
        )
    persons = decode_batch(heatmaps, pafs, stride=stride, **decode_options)
    return coco_keypoint_ap(
        load_coco(poseset.ann_file), detections_for(persons, poseset), poseset.image_ids.tolist()
    )


def bootstrap_ap(
    coco_gt: COCO,
    detections: Sequence[dict],
    image_ids: Sequence[int],
    *,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval of keypoint AP over images."""
    import numpy as np

    if not image_ids:
        return 0.0, 0.0
    values = bootstrap_replicates(
        coco_gt, {"ap": detections}, image_ids, samples=samples, seed=seed
    )
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values["ap"], [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_replicates(
    coco_gt: COCO,
    detections: Mapping[str, Sequence[dict]],
    image_ids: Sequence[int],
    *,
    samples: int = 200,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Keypoint AP of each named set of detections on the same ``samples`` bootstrap replicates
    of the images: paired, so that differences between the sets can be read replicate by
    replicate.

    Each replicate draws ``len(image_ids)`` images with replacement; a drawn image keeps its own
    ground truth and detections under a fresh id, so that an image drawn twice counts twice.
    """
    import numpy as np

    ids = [int(i) for i in image_ids]
    values: dict[str, list[float]] = {name: [] for name in detections}
    if not ids:
        return values
    gt_by_image = {i: coco_gt.imgToAnns.get(i, []) for i in ids}
    dt_by_image: dict[str, dict[int, list[dict]]] = {}
    for name, dets in detections.items():
        by_image = dt_by_image.setdefault(name, {})
        for det in dets:
            by_image.setdefault(int(det["image_id"]), []).append(det)
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        drawn = [ids[int(j)] for j in rng.integers(0, len(ids), len(ids))]
        images: list[dict] = []
        anns: list[dict] = []
        for new_id, old in enumerate(drawn, start=1):
            images.append({**coco_gt.imgs[old], "id": new_id})
            anns += [
                {**a, "id": len(anns) + k + 1, "image_id": new_id}
                for k, a in enumerate(gt_by_image[old])
            ]
        with _quiet():
            replicate = COCO()
            replicate.dataset = {
                "images": images,
                "annotations": anns,
                "categories": coco_gt.dataset["categories"],
            }
            replicate.createIndex()
        new_ids = range(1, len(ids) + 1)
        for name, by_image in dt_by_image.items():
            dets = [
                {**d, "image_id": new_id}
                for new_id, old in enumerate(drawn, start=1)
                for d in by_image.get(old, [])
            ]
            values[name].append(coco_keypoint_ap(replicate, dets, new_ids)["ap"])
    return values


def ceiling(
    poseset: PoseSet,
    stride: int,
    sigma: float,
    paf_thickness: float,
    batch_size: int = 256,
    **decode_options: Any,
) -> dict[str, float]:
    """AP of the decoded ground-truth targets: the best any net can reach at this size and
    stride."""
    from kdtune.decode import decode_batch
    from kdtune.targets import make_targets

    dets: list[dict] = []
    for start in range(0, len(poseset), batch_size):
        heat, paf = make_targets(
            poseset.keypoints[start : start + batch_size],
            input_size=poseset.input_size,
            stride=stride,
            sigma=sigma,
            paf_thickness=paf_thickness,
        )
        persons = decode_batch(heat, paf, stride=stride, **decode_options)
        dets.extend(detections_for(persons, poseset, start))
    return coco_keypoint_ap(load_coco(poseset.ann_file), dets, poseset.image_ids.tolist())
