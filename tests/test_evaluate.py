"""Tests of kdtune.evaluate: COCOeval keypoint AP on tiny COCO-format sets written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdtune.data.poseset import PoseSet
from kdtune.errors import KdtuneError
from kdtune.evaluate import (
    ceiling,
    coco_keypoint_ap,
    evaluate_predictions,
    gt_as_detections,
    load_coco,
)
from kdtune.skeleton import COCO17, coco17_to_op18

MINIPOSE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-minipose"
KEYS = {"ap", "ap50", "ap75", "apm", "apl", "ar"}

# Original images are 256 × 192; letterboxed to 128 × 128: scale 0.5, pad (0, 16).
WIDTH, HEIGHT, SIZE, SCALE, PAD = 256, 192, 128, 0.5, (0.0, 16.0)

# A frontal person of height 1 centred on (0, 0), COCO-17 order ("l_" on the image's right).
_TEMPLATE = np.array(
    [[0, -.42], [.04, -.45], [-.04, -.45], [.08, -.43], [-.08, -.43],
     [.12, -.3], [-.12, -.3], [.16, -.1], [-.16, -.1], [.18, .08], [-.18, .08],
     [.08, .05], [-.08, .05], [.09, .27], [-.09, .27], [.1, .48], [-.1, .48]],
)  # fmt: skip

# Per image: persons as (centre x, centre y, height) in letterboxed input pixels.
_PERSONS: dict[int, list[tuple[float, float, float]]] = {
    1: [(34.0, 62.0, 80.0), (94.0, 66.0, 70.0)],
    2: [(60.0, 64.0, 86.0)],
    3: [],  # an image without persons
}


def _input_keypoints(cx: float, cy: float, height: float) -> np.ndarray:
    """COCO-17 ``[17, 3]`` (x, y, v=2) in letterboxed input pixels."""
    return np.concatenate([_TEMPLATE * height + (cx, cy), np.full((17, 1), 2.0)], axis=1)


def _to_original(kps: np.ndarray) -> np.ndarray:
    out = kps.copy()
    out[:, :2] = (kps[:, :2] - PAD) / SCALE
    return out


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    """A COCO person-keypoints json with 3 images (one without persons) and one crowd."""
    images: list[dict] = []
    anns: list[dict] = []
    for image_id, persons in _PERSONS.items():
        images.append(
            {"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id}.jpg"}
        )
        for cx, cy, height in persons:
            kps = _to_original(_input_keypoints(cx, cy, height))
            x0, y0 = kps[:, :2].min(axis=0)
            x1, y1 = kps[:, :2].max(axis=0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": [float(v) for v in kps.reshape(-1)],
                    "num_keypoints": 17,
                    "iscrowd": 0,
                    "area": float(0.6 * (x1 - x0) * (y1 - y0)),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                }
            )
    anns.append(  # a crowd: never a detection, never counted
        {
            "id": len(anns) + 1,
            "image_id": 2,
            "category_id": 1,
            "keypoints": [0.0] * 51,
            "num_keypoints": 0,
            "iscrowd": 1,
            "area": 400.0,
            "bbox": [0.0, 0.0, 20.0, 20.0],
        }
    )
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO17),
        "skeleton": [],
    }
    path = tmp_path / "person_keypoints_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [category]}))
    return path


@pytest.fixture
def tiny_poseset(tiny_coco: Path) -> PoseSet:
    """The tiny set as a letterboxed PoseSet (blank images: only keypoints matter here)."""
    n, most = len(_PERSONS), max(len(p) for p in _PERSONS.values())
    keypoints = np.zeros((n, most, 18, 3), dtype=np.float32)
    for i, persons in enumerate(_PERSONS.values()):
        for p, spec in enumerate(persons):
            keypoints[i, p] = coco17_to_op18(_input_keypoints(*spec))
    return PoseSet(
        images=torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8),
        keypoints=torch.from_numpy(keypoints),
        masks=torch.zeros(n, SIZE, SIZE, dtype=torch.uint8),
        image_ids=torch.tensor(list(_PERSONS), dtype=torch.int64),
        scales=torch.full((n,), SCALE),
        pads=torch.tensor([PAD] * n, dtype=torch.float32),
        ann_file=str(tiny_coco),
        split="val",
    )


def test_ground_truth_as_detections_scores_one(tiny_coco: Path) -> None:
    coco = load_coco(tiny_coco)
    ids = sorted(_PERSONS)
    dets = gt_as_detections(coco, ids)
    assert len(dets) == 3  # the crowd is left out
    assert all(d["score"] == 1.0 and d["category_id"] == 1 for d in dets)
    metrics = coco_keypoint_ap(coco, dets, ids)
    assert set(metrics) == KEYS
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["ap"] == metrics["ap50"] == metrics["ap75"] == metrics["ar"] == 1.0
    # All persons are medium-sized: pycocotools has no large ones and says -1; kdtune says 0.
    assert metrics["apm"] == 1.0 and metrics["apl"] == 0.0


def test_jittered_detections_score_less(tiny_coco: Path) -> None:
    coco = load_coco(tiny_coco)
    ids = sorted(_PERSONS)
    dets = gt_as_detections(coco, ids)
    rng = np.random.default_rng(0)
    for d in dets:
        kps = np.array(d["keypoints"]).reshape(17, 3)
        kps[:, :2] += rng.uniform(-6, 6, size=(17, 2))
        d["keypoints"] = [float(v) for v in kps.reshape(-1)]
    metrics = coco_keypoint_ap(coco, dets, ids)
    assert 0.0 < metrics["ap"] < 1.0
    assert metrics["ap"] <= metrics["ap50"]


def test_no_detections_give_zeros(tiny_coco: Path) -> None:
    coco = load_coco(tiny_coco)
    zeros = dict.fromkeys(KEYS, 0.0)
    assert coco_keypoint_ap(coco, [], sorted(_PERSONS)) == zeros
    assert coco_keypoint_ap(coco, [], []) == zeros
    # Detections only where there is no person: a false positive, AP 0, no crash.
    stray = gt_as_detections(coco, [1])[:1]
    stray[0]["image_id"] = 3
    assert coco_keypoint_ap(coco, stray, sorted(_PERSONS))["ap"] == 0.0
    # Only the image without persons: pycocotools says -1 everywhere, kdtune 0.
    assert coco_keypoint_ap(coco, stray, [3]) == zeros


def test_detections_outside_the_image_ids_are_ignored(tiny_coco: Path) -> None:
    coco = load_coco(tiny_coco)
    dets = gt_as_detections(coco, sorted(_PERSONS))
    before = json.dumps(dets)
    assert coco_keypoint_ap(coco, dets, [2])["ap"] == pytest.approx(1.0)
    assert json.dumps(dets) == before  # loadRes must not edit the caller's dicts


def test_bad_inputs_are_user_errors(tiny_coco: Path, tmp_path: Path) -> None:
    coco = load_coco(tiny_coco)
    with pytest.raises(KdtuneError, match="99"):
        coco_keypoint_ap(coco, [], [1, 99])
    with pytest.raises(KdtuneError, match="not found"):
        load_coco(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(KdtuneError, match=r"broken\.json"):
        load_coco(broken)


def test_load_coco_is_cached(tiny_coco: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_coco(tiny_coco) is load_coco(str(tiny_coco))
    coco_keypoint_ap(load_coco(tiny_coco), gt_as_detections(load_coco(tiny_coco), [1]), [1])
    assert capsys.readouterr().out == ""  # pycocotools kept quiet


def test_decoded_targets_evaluate_high(tiny_poseset: PoseSet) -> None:
    targets = pytest.importorskip("kdtune.targets")
    heat, paf = targets.make_targets(tiny_poseset.keypoints, input_size=SIZE, stride=8, sigma=7.0)
    metrics = evaluate_predictions(heat, paf, tiny_poseset, stride=8)
    assert metrics["ap"] > 0.9
    assert metrics == ceiling(tiny_poseset, stride=8, sigma=7.0, paf_thickness=1.0)
    blank = evaluate_predictions(torch.zeros_like(heat), torch.zeros_like(paf), tiny_poseset, 8)
    assert blank == dict.fromkeys(KEYS, 0.0)
    with pytest.raises(ValueError, match="images"):
        evaluate_predictions(heat[:2], paf[:2], tiny_poseset, stride=8)


@pytest.mark.skipif(not MINIPOSE.is_dir(), reason="../shared/data/coco-minipose is absent")
def test_real_coco_ground_truth_scores_one() -> None:
    coco = load_coco(MINIPOSE / "annotations" / "person_keypoints_val2017.json")
    ids = coco.getImgIds()
    metrics = coco_keypoint_ap(coco, gt_as_detections(coco, ids), ids)
    assert metrics["ap"] == 1.0 and metrics["ar"] == 1.0
