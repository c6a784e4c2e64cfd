"""The bootstrap interval of keypoint AP over images, on the real mini COCO set."""

from __future__ import annotations

from pathlib import Path

from kdtune.evaluate import bootstrap_ap, coco_keypoint_ap, gt_as_detections, load_coco


def test_perfect_detections_give_a_degenerate_interval_at_one(minipose: Path) -> None:
    gt = load_coco(minipose / "annotations" / "person_keypoints_val2017.json")
    ids = [i for i in gt.getImgIds() if gt.getAnnIds(imgIds=[i], iscrowd=False)]
    low, high = bootstrap_ap(gt, gt_as_detections(gt, ids), ids, samples=20)
    assert (low, high) == (1.0, 1.0)


def test_partial_detections_give_an_interval_around_the_estimate(minipose: Path) -> None:
    gt = load_coco(minipose / "annotations" / "person_keypoints_val2017.json")
    ids = sorted(gt.getImgIds())
    dets = gt_as_detections(gt, ids)[::2]  # every other person missed
    point = coco_keypoint_ap(gt, dets, ids)["ap"]
    low, high = bootstrap_ap(gt, dets, ids, samples=60, seed=1)
    assert 0.0 < low < point < high < 1.0
    assert bootstrap_ap(gt, dets, ids, samples=60, seed=1) == (low, high)  # seeded


def test_replicates_are_paired_across_detection_sets(minipose: Path) -> None:
    """The same images in every replicate: identical detections give identical values, and a
    worse set is worse replicate by replicate."""
    from kdtune.evaluate import bootstrap_replicates

    gt = load_coco(minipose / "annotations" / "person_keypoints_val2017.json")
    ids = sorted(gt.getImgIds())
    full = gt_as_detections(gt, ids)
    half = full[::2]
    reps = bootstrap_replicates(
        gt, {"full": full, "again": list(full), "half": half}, ids, samples=30, seed=2
    )
    assert reps["full"] == reps["again"] == [1.0] * 30
    assert all(h < f for h, f in zip(reps["half"], reps["full"], strict=True))
    assert len(set(reps["half"])) > 1  # the replicates do vary
