"""The paired verdict's maths: AP recomputed from one matching equals COCOeval's (golden
values on real and synthetic ground truth), a bootstrap replicate equals COCOeval on the
replicate's images, and the paired bootstrap recovers a known difference and covers 0 when
there is none."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools.coco import COCO

from kdtune.errors import KdtuneError
from kdtune.evaluate import (
    bootstrap_replicates,
    coco_keypoint_ap,
    gt_as_detections,
    load_coco,
    load_matches,
    match_images,
    save_detections,
)
from kdtune.verdict import (
    Difference,
    confirm_verdict,
    label,
    paired_difference,
    rank,
    sentence,
)


def _noisy(gt: COCO, ids: list[int], *, seed: int, noise: float, drop: float = 0.0) -> list[dict]:
    """Ground-truth persons as detections, with keypoint noise (pixels), random scores, some
    persons dropped and a few false positives: detections with an AP strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    dets = []
    for d in gt_as_detections(gt, ids):
        if rng.random() < drop:
            continue
        kp = np.asarray(d["keypoints"], float).reshape(-1, 3)
        kp[:, :2] += rng.normal(0.0, noise, size=(len(kp), 2))
        dets.append({**d, "keypoints": kp.ravel().tolist(), "score": float(rng.random())})
    for i in ids[:5]:  # false positives
        dets.append(
            {"image_id": i, "category_id": 1, "keypoints": [5.0, 5.0, 2] * 17, "score": 0.5}
        )
    return dets


@pytest.fixture(scope="module")
def synth_val(synth_root: Path) -> tuple[COCO, list[int]]:
    gt = load_coco(synth_root / "annotations" / "person_keypoints_val2017.json")
    return gt, sorted(gt.getImgIds())


@pytest.mark.parametrize("noise", [0.0, 2.0, 6.0])
def test_ap_from_one_matching_equals_cocoeval_on_synthetic_ground_truth(
    synth_val: tuple[COCO, list[int]], noise: float
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=1, noise=noise, drop=0.2)
    assert match_images(gt, dets, ids).ap() == pytest.approx(
        coco_keypoint_ap(gt, dets, ids)["ap"], abs=1e-12
    )


def test_ap_from_one_matching_equals_cocoeval_on_real_coco(minipose: Path) -> None:
    gt = load_coco(minipose / "annotations" / "person_keypoints_val2017.json")
    ids = sorted(gt.getImgIds())
    dets = _noisy(gt, ids, seed=2, noise=6.0, drop=0.2)
    value = match_images(gt, dets, ids).ap()
    assert 0.05 < value < 0.95
    assert value == pytest.approx(coco_keypoint_ap(gt, dets, ids)["ap"], abs=1e-12)


def test_no_detection_and_no_person_give_zero(synth_val: tuple[COCO, list[int]]) -> None:
    gt, ids = synth_val
    assert match_images(gt, [], ids).ap() == 0.0
    m = match_images(gt, _noisy(gt, ids, seed=0, noise=1.0), ids)
    assert m.ap(np.zeros(len(ids))) == 0.0  # no image drawn: nothing to measure


def _replicate_by_cocoeval(gt: COCO, dets: list[dict], drawn: list[int]) -> float:
    """COCOeval on a replicate built as a new COCO set: each drawn image under a fresh id."""
    images, anns = [], []
    for new_id, old in enumerate(drawn, start=1):
        images.append({**gt.imgs[old], "id": new_id})
        anns += [
            {**a, "id": len(anns) + k + 1, "image_id": new_id}
            for k, a in enumerate(gt.imgToAnns.get(old, []))
        ]
    with contextlib.redirect_stdout(io.StringIO()):
        replicate = COCO()
        replicate.dataset = {
            "images": images,
            "annotations": anns,
            "categories": gt.dataset["categories"],
        }
        replicate.createIndex()
    moved = [
        {**d, "image_id": new_id}
        for new_id, old in enumerate(drawn, start=1)
        for d in dets
        if int(d["image_id"]) == old
    ]
    return coco_keypoint_ap(replicate, moved, range(1, len(drawn) + 1))["ap"]


def test_a_bootstrap_replicate_equals_cocoeval_on_its_images(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=3, noise=4.0, drop=0.1)
    reps = bootstrap_replicates(gt, {"a": dets}, ids, samples=4, seed=5)["a"]
    rng = np.random.default_rng(5)  # the same draws as bootstrap_replicates
    for value in reps:
        drawn = [ids[int(j)] for j in rng.integers(0, len(ids), len(ids))]
        assert value == pytest.approx(_replicate_by_cocoeval(gt, dets, drawn), abs=1e-12)


def test_saved_detections_give_the_same_matching(
    synth_val: tuple[COCO, list[int]], synth_root: Path, tmp_path: Path
) -> None:
    gt, ids = synth_val
    dets = _noisy(gt, ids, seed=4, noise=3.0)
    path = tmp_path / "val_detections.json"
    save_detections(path, synth_root / "annotations" / "person_keypoints_val2017.json", ids, dets)
    assert load_matches(path).ap() == pytest.approx(match_images(gt, dets, ids).ap(), abs=1e-3)
    path.write_text("{not json")
    with pytest.raises(KdtuneError, match="not a kdtune detections file"):
        load_matches(path)


def _configs(gt: COCO, ids: list[int], *, noise: float, drop: float, base: int) -> dict:
    """One configuration trained with seeds 0, 1, 2: a matching per seed."""
    return {
        s: match_images(gt, _noisy(gt, ids, seed=base + s, noise=noise, drop=drop), ids)
        for s in range(3)
    }


def test_the_paired_bootstrap_recovers_a_known_difference(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    good = _configs(gt, ids, noise=1.0, drop=0.0, base=10)
    poor = _configs(gt, ids, noise=4.0, drop=0.4, base=20)
    known = np.mean([good[s].ap() - poor[s].ap() for s in range(3)])
    assert known > 0.2  # constructed so
    diff = paired_difference(good, poor, samples=400, seed=0)
    assert diff.mean == pytest.approx(known)
    assert diff.low > 0 and diff.low < diff.mean < diff.high
    assert diff.sign == 1 and diff.seeds == 3 and diff.images == len(ids)
    back = paired_difference(poor, good, samples=400, seed=0)
    assert back.mean == pytest.approx(-known) and back.sign == -1


def test_with_no_difference_the_interval_covers_zero(synth_val: tuple[COCO, list[int]]) -> None:
    gt, ids = synth_val
    same = _configs(gt, ids, noise=3.0, drop=0.2, base=30)
    exact = paired_difference(same, dict(same), samples=200, seed=0)
    assert (exact.mean, exact.low, exact.high) == (0.0, 0.0, 0.0) and exact.sign == 0
    # two configurations drawn from the same process, with other seeds: noise, no effect
    a = _configs(gt, ids, noise=3.0, drop=0.2, base=40)
    b = _configs(gt, ids, noise=3.0, drop=0.2, base=50)
    diff = paired_difference(a, b, samples=400, seed=0)
    assert diff.low < 0 < diff.high and diff.sign == 0


def test_a_paired_difference_needs_shared_seeds_and_images(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    a = _configs(gt, ids, noise=1.0, drop=0.0, base=60)
    with pytest.raises(KdtuneError, match="share no training seed"):
        paired_difference(a, {7: a[0]})
    fewer = {s: match_images(gt, [], ids[:-1]) for s in range(3)}
    with pytest.raises(KdtuneError, match="other images"):
        paired_difference(a, fewer)


def test_confirm_verdict_ranks_by_mean_and_compares_with_default_and_runner_up(
    synth_val: tuple[COCO, list[int]],
) -> None:
    gt, ids = synth_val
    matches = {
        "fixed:0.9": _configs(gt, ids, noise=1.0, drop=0.0, base=70),
        "fixed:0.75": _configs(gt, ids, noise=4.0, drop=0.4, base=80),
        "linear:0.9:0.5": _configs(gt, ids, noise=2.5, drop=0.2, base=90),
    }
    v = confirm_verdict(matches, "fixed:0.75", samples=200)
    assert v["recommended"] == "fixed:0.9"
    assert [r["schedule"] for r in v["ranking"]] == ["fixed:0.9", "linear:0.9:0.5", "fixed:0.75"]
    means = [r["mean"] for r in v["ranking"]]
    assert means == sorted(means, reverse=True)
    assert [c["role"] for c in v["comparisons"]] == ["seed default", "runner-up"]
    assert [c["against"] for c in v["comparisons"]] == ["fixed:0.75", "linear:0.9:0.5"]
    assert v["sentence"].startswith("α = 0.1 (fixed:0.9) beats the seed default α = 0.25 by +")
    assert v["sentence"].endswith(f"(3 seeds × {len(ids)} images)")
    # the default itself ranked first: compared with the runner-up
    w = confirm_verdict({k: matches[k] for k in ("fixed:0.9", "fixed:0.75")}, "fixed:0.9")
    assert w["sentence"].startswith("the seed default α = 0.1 beats the runner-up α = 0.25")


def test_rank_and_standard_error() -> None:
    standings = rank({"a": {0: 0.2, 1: 0.4}, "b": {0: 0.35}, "c": {}})
    assert [s.schedule for s in standings] == ["b", "a"]
    assert standings[1].mean == pytest.approx(0.3)
    assert standings[1].se == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)
    assert standings[0].se == 0.0


@given(
    mean=st.floats(-0.5, 0.5),
    spread=st.floats(0.0, 0.2),
    shift=st.floats(-0.2, 0.2),
)
def test_the_sentence_follows_the_interval(mean: float, spread: float, shift: float) -> None:
    low, high = mean + shift - spread, mean + shift + spread
    d = Difference(mean, low, high, (mean,), 1, 10)
    text = sentence("A", "B", d)
    if low > 0:
        assert text.startswith("A beats B by ")
    elif high < 0:
        assert text.startswith("A trails B by ")
    else:
        assert text.startswith("A is not distinguishable from B: ")
    assert text.endswith("(1 seed × 10 images)")


def test_labels() -> None:
    assert label("fixed:0.75") == "α = 0.25 (fixed:0.75)"
    assert label("fixed:1") == "α = 0 (fixed:1)"
    assert label("cosine:0.9:0.5") == "cosine:0.9:0.5"
