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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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


def decode_maps(
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    stride: int,
    decoder: str = "kdtune",
    **decode_options: Any,
) -> list[list[Person]]:
    """Persons of each image of a batch of maps, decoded by ``decoder`` (one of
    :data:`kdtune.config.DECODERS`): ``kdtune`` (:func:`kdtune.decode.decode_batch`, which takes
    ``decode_options``) or ``reference`` (:func:`kdtune.decode_reference.decode_batch_reference`
    with the reference's thresholds; an option is an error there)."""
    from kdtune.config import DECODERS

    if decoder == "kdtune":
        from kdtune.decode import decode_batch

        return decode_batch(heatmaps, pafs, stride=stride, **decode_options)
    if decoder == "reference":
        from kdtune.decode_reference import ReferenceOptions, decode_batch_reference

        return decode_batch_reference(heatmaps, pafs, stride, ReferenceOptions(**decode_options))
    raise KdtuneError(f"decoder: one of {', '.join(DECODERS)}, got {decoder!r}")


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
    decoder: str = "kdtune",
    **decode_options: Any,
) -> dict[str, float]:
    """Decode maps of every image of ``poseset`` (in order) and evaluate them against its
    COCO file."""
    return score_maps(heatmaps, pafs, poseset, stride, decoder, **decode_options)[0]


def score_maps(
    heatmaps: torch.Tensor,
    pafs: torch.Tensor,
    poseset: PoseSet,
    stride: int,
    decoder: str = "kdtune",
    **decode_options: Any,
) -> tuple[dict[str, float], list[dict]]:
    """:func:`evaluate_predictions`'s figures and the detections they were computed from."""
    if heatmaps.shape[0] != len(poseset) or pafs.shape[0] != len(poseset):
        raise ValueError(
            f"got maps for {heatmaps.shape[0]}/{pafs.shape[0]} images, the set has {len(poseset)}"
        )
    persons = decode_maps(heatmaps, pafs, stride, decoder, **decode_options)
    detections = detections_for(persons, poseset)
    figures = coco_keypoint_ap(load_coco(poseset.ann_file), detections, poseset.image_ids.tolist())
    return figures, detections


DETECTIONS_FILE = "val_detections.json"  # in a trial's final checkpoint: what its AP scored


def save_detections(
    path: Path, ann_file: str | Path, image_ids: Sequence[int], detections: Sequence[dict]
) -> None:
    """Write the detections an AP was computed from, with the images and the ground truth they
    were scored on (atomically), so the AP can be recomputed and paired later."""
    payload = {
        "ann_file": str(Path(ann_file).resolve()),
        "image_ids": [int(i) for i in image_ids],
        "detections": [
            {
                "image_id": int(d["image_id"]),
                "category_id": int(d.get("category_id", 1)),
                "keypoints": [round(float(v), 2) for v in d["keypoints"]],
                "score": float(d["score"]),
            }
            for d in detections
        ],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    tmp.replace(path)


def load_matches(path: Path) -> ImageMatches:
    """The matching of the detections saved at ``path`` (:func:`save_detections`)."""
    try:
        raw = json.loads(Path(path).read_text())
        ann_file, ids, dets = raw["ann_file"], raw["image_ids"], raw["detections"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KdtuneError(f"{path}: not a kdtune detections file ({exc})") from None
    return match_images(load_coco(ann_file), dets, ids)


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

    Each replicate draws ``len(image_ids)`` images with replacement; an image drawn twice counts
    twice (its persons and its detections). Each set is matched once (:func:`match_images`);
    a replicate only reweights the images.
    """
    ids = sorted({int(i) for i in image_ids})
    values: dict[str, list[float]] = {name: [] for name in detections}
    if not ids:
        return values
    matches = {name: match_images(coco_gt, dets, ids) for name, dets in detections.items()}
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        weights = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        for name, m in matches.items():
            values[name].append(m.ap(weights))
    return values


@dataclass(frozen=True)
class ImageMatches:
    """COCOeval's matching of one set of detections on a fixed list of images, kept per
    detection so that AP can be recomputed for any reweighting of the images (a bootstrap
    replicate) without matching again.

    Detections are in COCOeval's order (score descending, stable); ``tp``/``fp`` are
    ``[thresholds, detections]`` (a detection matched to an ignored person is neither).
    """

    image_ids: tuple[int, ...]
    image_of: np.ndarray  # [D] index into image_ids of each detection
    tp: np.ndarray  # [T, D] bool
    fp: np.ndarray  # [T, D] bool
    persons: np.ndarray  # [N] persons per image that count (not ignored)

    def ap(self, weights: np.ndarray | None = None) -> float:
        """Keypoint AP @ OKS 0.50:0.95 with image ``i`` counted ``weights[i]`` times
        (COCOeval's accumulate and summarize; 0.0 where nothing can be measured)."""
        w = np.ones(len(self.image_ids)) if weights is None else np.asarray(weights, float)
        total = float(np.dot(w, self.persons))
        if total <= 0:
            return 0.0
        det_w = w[self.image_of]
        tp_sum = np.cumsum(self.tp * det_w, axis=1)
        fp_sum = np.cumsum(self.fp * det_w, axis=1)
        if tp_sum.shape[1] == 0:
            return 0.0
        recall = tp_sum / total
        precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
        # the precision envelope: the best precision at any recall at least this one
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        total_ap = 0.0
        for t in range(recall.shape[0]):
            idx = np.searchsorted(recall[t], _RECALL_THRESHOLDS, side="left")
            hit = idx < recall.shape[1]
            total_ap += float(precision[t, idx[hit]].sum())
        return total_ap / (recall.shape[0] * len(_RECALL_THRESHOLDS))


_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs


def match_images(
    coco_gt: COCO, detections: Sequence[dict], image_ids: Sequence[int]
) -> ImageMatches:
    """Match ``detections`` to the persons of ``image_ids`` once, as COCOeval does (keypoint
    OKS, area range "all", at most 20 detections per image)."""
    ids = sorted({int(i) for i in image_ids})
    wanted = set(ids)
    dets = [dict(d) for d in detections if int(d["image_id"]) in wanted]
    thresholds = 10
    if not dets:  # nothing detected: every person counts, no detection
        persons = np.array(
            [sum(1 for a in coco_gt.imgToAnns.get(i, []) if _counts(a)) for i in ids],
            dtype=float,
        )
        empty = np.zeros((thresholds, 0), dtype=bool)
        return ImageMatches(tuple(ids), np.zeros(0, dtype=int), empty, empty, persons)
    with _quiet():
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "keypoints")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
    max_det = evaluator.params.maxDets[-1]
    thresholds = len(evaluator.params.iouThrs)
    scores, image_of, matched, ignored = [], [], [], []
    persons = np.zeros(len(ids))
    # evalImgs: [category][area range][image]; the first len(ids) entries are area "all"
    for i, e in enumerate(evaluator.evalImgs[: len(ids)]):
        if e is None:
            continue
        persons[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        n = len(e["dtScores"][:max_det])
        scores.append(np.asarray(e["dtScores"][:max_det], dtype=float))
        image_of.append(np.full(n, i))
        matched.append(np.asarray(e["dtMatches"])[:, :max_det].reshape(thresholds, n))
        ignored.append(np.asarray(e["dtIgnore"])[:, :max_det].reshape(thresholds, n))
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dtm = np.concatenate(matched, axis=1)[:, order].astype(bool)
    dtig = np.concatenate(ignored, axis=1)[:, order].astype(bool)
    return ImageMatches(
        tuple(ids),
        np.concatenate(image_of)[order],
        dtm & ~dtig,
        ~dtm & ~dtig,
        persons,
    )


def _counts(ann: dict) -> bool:
    """Whether a ground-truth person counts in keypoint AP (COCOeval ignores crowds and
    persons without labelled keypoints)."""
    return not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0


def ceiling(
    poseset: PoseSet,
    stride: int,
    sigma: float,
    paf_thickness: float,
    batch_size: int = 256,
    decoder: str = "kdtune",
    **decode_options: Any,
) -> dict[str, float]:
    """AP of the decoded ground-truth targets: the best any net can reach at this size and
    stride (with ``decoder``)."""
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
        persons = decode_maps(heat, paf, stride, decoder, **decode_options)
        dets.extend(detections_for(persons, poseset, start))
    return coco_keypoint_ap(load_coco(poseset.ann_file), dets, poseset.image_ids.tolist())


# --- AP for any reweighting of the images: bootstrap replicates -----------------------------


def image_draws(images: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` bootstrap draws of ``images`` images: row b holds how many times each image
    was drawn (with replacement) in replicate b."""
    rng = np.random.default_rng(seed)
    draws = np.zeros((samples, images), dtype=np.int64)
    for b in range(samples):
        draws[b] = np.bincount(rng.integers(0, images, images), minlength=images)
    return draws


_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs, as ImageMatches uses


def ap_replicates(m: ImageMatches, weights: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``m.ap(w)`` for every row ``w`` of ``weights`` ([B, images]), computed for many rows
    at once: each recall threshold is served by the first detection whose recall reaches it,
    so a detection's precision counts once per threshold in (previous recall, its recall]."""
    w_all = np.asarray(weights, dtype=float)
    out = np.zeros(len(w_all))
    totals = w_all @ m.persons
    if m.tp.shape[1] == 0:
        return out
    for start in range(0, len(w_all), chunk):
        w = w_all[start : start + chunk][:, m.image_of][:, None, :]  # [b, 1, D]
        total = totals[start : start + chunk][:, None, None]
        tp_sum = np.cumsum(m.tp[None] * w, axis=2)
        fp_sum = np.cumsum(m.fp[None] * w, axis=2)
        recall = tp_sum / np.where(total > 0, total, 1.0)
        precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
        precision = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]
        reached = np.searchsorted(_RECALL_THRESHOLDS, recall, side="right")  # thr ≤ recall
        served = np.diff(reached, axis=2, prepend=0)
        value = (precision * served).sum(axis=(1, 2)) / (m.tp.shape[0] * len(_RECALL_THRESHOLDS))
        out[start : start + chunk] = np.where(total[:, 0, 0] > 0, value, 0.0)
    return out
