"""The synthetic COCO-format person-keypoints set: determinism, COCO validity, content."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kdtune.data.coco import load_split
from kdtune.data.synth import coco_keypoint_names, person_category, write_synthetic
from kdtune.errors import KdtuneError
from kdtune.skeleton import COCO17


def _doc(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / "annotations" / f"person_keypoints_{split}2017.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    small: dict[str, Any] = {"n_train": 3, "n_val": 2, "n_test": 1}
    a = _files(write_synthetic(tmp_path / "a", seed=0, **small))
    b = _files(write_synthetic(tmp_path / "b", seed=0, **small))
    c = _files(write_synthetic(tmp_path / "c", seed=1, **small))
    assert len(a) == 3 + 3 + 2 + 1 and a == b
    assert set(a) == set(c) and all(a[k] != c[k] for k in a)


def test_first_images_do_not_depend_on_the_count(tmp_path: Path, synth_root: Path) -> None:
    few = write_synthetic(tmp_path / "few", n_train=2, n_val=0, n_test=0)
    for im in _doc(few, "train")["images"]:
        name = f"train2017/{im['file_name']}"
        assert (few / name).read_bytes() == (synth_root / name).read_bytes()


def test_layout_and_category(synth_root: Path) -> None:
    for split, n in (("train", 48), ("val", 24), ("test", 8)):
        doc = _doc(synth_root, split)
        assert len(doc["images"]) == n
        assert all(
            (synth_root / f"{split}2017" / im["file_name"]).is_file() for im in doc["images"]
        )
        assert doc["categories"] == [person_category()]
    cat = person_category()
    assert cat["keypoints"][:3] == ["nose", "left_eye", "right_eye"] and len(cat["skeleton"]) == 19
    assert cat["keypoints"][COCO17.index("r_ank")] == "right_ankle"
    assert len(set(coco_keypoint_names())) == 17
    assert all(1 <= i <= 17 for pair in cat["skeleton"] for i in pair)


def test_ground_truth_as_detections_scores_ap_one(synth_root: Path) -> None:
    ann = synth_root / "annotations" / "person_keypoints_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dets = [
            {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in gt.dataset["annotations"]
            if a["num_keypoints"] > 0
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_annotations_are_consistent(synth_root: Path) -> None:
    for split in ("train", "val"):
        doc = _doc(synth_root, split)
        size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
        ids = [a["id"] for a in doc["annotations"]]
        assert len(ids) == len(set(ids))
        for a in doc["annotations"]:
            w, h = size[a["image_id"]]
            k = np.array(a["keypoints"]).reshape(17, 3)
            lab = k[:, 2] > 0
            assert set(k[:, 2]) <= {0, 1, 2} and a["num_keypoints"] == lab.sum()
            assert (k[~lab] == 0).all()  # unlabelled joints are (0, 0, 0), as in COCO
            assert ((k[lab, 0] >= 0) & (k[lab, 0] < w) & (k[lab, 1] >= 0) & (k[lab, 1] < h)).all()
            x, y, bw, bh = a["bbox"]
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
            assert a["area"] > 0 and a["iscrowd"] == 0 and a["category_id"] == 1
            poly = np.array(a["segmentation"][0]).reshape(-1, 2)
            assert len(poly) >= 3


def test_content_is_varied(synth_root: Path) -> None:
    doc = _doc(synth_root, "train")
    per_image = Counter(a["image_id"] for a in doc["annotations"])
    counts = Counter(per_image.get(im["id"], 0) for im in doc["images"])
    assert set(counts) <= {0, 1, 2, 3} and counts[2] + counts[3] >= 5
    v = np.array([a["keypoints"][2::3] for a in doc["annotations"]])
    assert (v == 1).sum() >= 10 and (v == 2).mean() > 0.5  # occluded joints, but mostly visible
    size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    cut = [
        a for a in doc["annotations"]
        if (np.array(a["keypoints"][2::3]) == 0).any()
        and (a["bbox"][0] <= 0 or a["bbox"][1] <= 0
             or a["bbox"][0] + a["bbox"][2] >= size[a["image_id"]][0]
             or a["bbox"][1] + a["bbox"][3] >= size[a["image_id"]][1])
    ]  # fmt: skip
    assert len(cut) >= 3  # people cut by the border lose joints
    shapes = {(im["width"], im["height"]) for im in doc["images"]}
    assert len(shapes) > 20 and sum(w != h for w, h in shapes) > 20
    assert all(128 <= w <= 256 and 128 <= h <= 256 for w, h in shapes)
    heights = [a["bbox"][3] / size[a["image_id"]][1] for a in doc["annotations"]]
    assert min(heights) < 0.5 and max(heights) > 0.8


def test_images_match_their_entries(synth_root: Path) -> None:
    doc = _doc(synth_root, "val")
    for im in doc["images"][:6]:
        img = cv2.imread(str(synth_root / "val2017" / im["file_name"]))
        assert img is not None and img.shape == (im["height"], im["width"], 3)
        assert img.std() > 10  # not a flat image


def test_the_loader_reads_it(synth_root: Path, tmp_path: Path) -> None:
    ps = load_split(synth_root, "val", 128, cache_dir=tmp_path)
    doc = _doc(synth_root, "val")
    assert len(ps) == 24 and ps.skipped == 0
    assert int((ps.keypoints[..., 2].amax(-1) > 0).sum()) == sum(
        a["num_keypoints"] > 0 for a in doc["annotations"]
    )
    assert ps.keypoints.shape[1] == max(Counter(a["image_id"] for a in doc["annotations"]).values())
    assert int(ps.masks.sum()) == 0  # no crowds, no persons without keypoints here


@pytest.mark.parametrize(
    "kw",
    [{"n_train": -1}, {"n_val": 1.5}, {"image_size": (32, 64)}, {"image_size": (200, 100)}],
)
def test_bad_arguments_are_errors(tmp_path: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(KdtuneError, match="synthetic"):
        write_synthetic(tmp_path, **kw)
